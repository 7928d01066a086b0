"""The domain core: the rules of the business, as pure functions and values.

Nothing here does I/O (no Redis, no database, no network, no files, no clock read: time is an
argument); ``tests/test_architecture.py`` enforces it. The services carry out the decisions
made here: the SQL, the Lua and the loop apply them, they do not make them.

- :mod:`cofounder_domain.plans`: one :class:`~cofounder_domain.plans.Plan` per tier;
- :mod:`cofounder_domain.lifecycle`: a build's statuses, their order, counters that only grow;
- :mod:`cofounder_domain.budget`: the daily-budget formula and the 80 %/100 % thresholds;
- :mod:`cofounder_domain.run`: the agent run's decisions between and after turns.
"""
