"""The boundary_guidance pipeline (see README.md); compiled form in pipeline.yaml."""
