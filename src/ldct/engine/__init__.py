"""The training engine shared by every method, on Lightning Fabric.

- :mod:`ldct.engine.config` — recipes: ``load_recipe(name_or_path, overrides) -> dict`` (validated, resolved)
- :mod:`ldct.engine.specs` — ``build_network(spec)``, ``build_loss(spec)``, keyword checks with suggestions
- :mod:`ldct.engine.loop` — ``train(recipe, data=..., out=..., max_steps, devices, resume) -> run folder``
- :mod:`ldct.engine.checkpoint` — ``load_checkpoint(path) -> (method, meta)``, ``export_model(src, out)``
- :mod:`ldct.engine.validate` — periodic validation metrics (HU windows) and sample slices
- :mod:`ldct.engine.logging` — TensorBoard/CSV loggers, progress bar, figures
- :mod:`ldct.engine.state` — RNG state and the resumable distributed sampler

Submodules are imported explicitly (Lightning is only imported when training starts).
"""
