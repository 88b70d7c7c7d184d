"""The reconstruct stage: fit an Instant-NGP field to the capture."""
