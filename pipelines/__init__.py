"""KFP pipeline definitions (one folder per pipeline)."""
