"""Editing losses (SDS, DDS, PDS, SSD, PIVA): one method per file, shared pieces in ``base``.

Use ``backend.editing.registry.build_method(name, model, settings)`` and call
``method.step(MethodInputs(...))`` once per optimisation step; backpropagate ``result.loss``.
"""
