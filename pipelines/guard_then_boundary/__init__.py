"""The guard_then_boundary pipeline (see README.md); compiled form in pipeline.yaml."""
