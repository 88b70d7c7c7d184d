"""The PIVA backend: fits a neural field to a Blender capture, edits it with a diffusion model,
and exports the result as a textured mesh. Runs as a subprocess: ``python -m backend run JOB.json``.

Importing the package is cheap and needs no GPU; heavy imports (torch, diffusers) live in the
modules that use them.
"""

__version__ = "0.1.0"
