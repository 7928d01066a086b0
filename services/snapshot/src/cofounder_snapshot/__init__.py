"""cofounder_snapshot."""
