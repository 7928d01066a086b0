"""cofounder_agent_runner."""
