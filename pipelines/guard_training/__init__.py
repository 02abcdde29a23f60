"""The guard_training pipeline (see README.md); compiled form in pipeline.yaml."""
