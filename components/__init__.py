"""KFP component definitions (one folder per stage)."""
