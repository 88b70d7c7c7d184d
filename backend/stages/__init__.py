"""Glue between the runner and each stage's implementation: where inputs come from, where
outputs go, and when a stage is already done (so a job run again skips it)."""
