"""Pipeline stages: one module per stage (``CONFIG``, ``HELP``, ``run(cfg)``); see docs/architecture.md."""
