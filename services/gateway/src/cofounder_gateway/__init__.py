"""cofounder_gateway."""
