"""cofounder_budget."""
