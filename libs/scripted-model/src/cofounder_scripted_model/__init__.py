"""A scripted stand-in for Anthropic's Messages API: a real HTTP server, driven by transcripts.

The agent runner talks to it through the unmodified ``anthropic`` SDK (``base_url``), so the code
path is the production one. Start it with ``python -m cofounder_scripted_model`` or, in tests,
:func:`cofounder_scripted_model.process.start`.
"""
