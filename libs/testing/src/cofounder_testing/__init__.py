"""cofounder_testing."""
