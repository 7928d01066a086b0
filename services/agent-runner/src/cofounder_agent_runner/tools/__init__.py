"""The agent's tools, run through a dispatcher bound to a live sandbox."""

from cofounder_agent_runner.tools.definitions import TOOL_DEFINITIONS
from cofounder_agent_runner.tools.dispatcher import ToolDispatcher, ToolOutcome

__all__ = ["TOOL_DEFINITIONS", "ToolDispatcher", "ToolOutcome"]
