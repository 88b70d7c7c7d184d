"""Rays, samplers and volume rendering of a field."""
