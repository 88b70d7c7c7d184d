"""Loading the capture folder written by Blender (docs/capture_format.md)."""
