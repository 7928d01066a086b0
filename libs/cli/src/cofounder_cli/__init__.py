"""cofounder_cli."""
