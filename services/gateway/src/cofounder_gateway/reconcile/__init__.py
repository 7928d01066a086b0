"""The reconciler: PostgreSQL is the truth, and the pipeline converges from it after Redis forgot.

- :mod:`.facts`: what PostgreSQL says of a build, what Redis holds (the two views);
- :mod:`.decide`: what is missing, as a pure function of the two views (unit-tested per stage);
- :mod:`.observe`: reading both views, bounded;
- :mod:`.reconciler`: the loop (one active replica through a lease), the repairs it publishes,
  their metrics and log lines.

See docs/adr/0006-reconciler.md for the convergence rule.
"""
