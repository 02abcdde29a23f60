"""The evaluation pipeline (see README.md); compiled form in pipeline.yaml."""
