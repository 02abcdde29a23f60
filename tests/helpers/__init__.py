"""Support code for the test suite (a SeaweedFS launcher, writer subprocesses)."""
