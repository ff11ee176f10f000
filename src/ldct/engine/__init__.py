"""The training engine shared by every method, on Lightning Fabric.

- :mod:`ldct.engine.config` — recipes: ``load_recipe(name_or_path, overrides) -> dict`` (validated, resolved)
- :mod:`ldct.engine.loop` — ``train(recipe, data=..., out=..., max_steps, devices, resume) -> run folder``
- :mod:`ldct.engine.checkpoint` — writing checkpoints during training; ``load_checkpoint(path) -> (method, meta)``
  rebuilds every network of a run (denoising loads the network alone: ``ldct.Denoiser.load``)
- :mod:`ldct.engine.validate` — periodic validation metrics (HU windows) and sample slices
- :mod:`ldct.engine.logging` — TensorBoard/CSV loggers, progress bar, figures
- :mod:`ldct.engine.state` — RNG state and the resumable distributed sampler

Submodules are imported explicitly (Lightning is only imported when training starts). Networks and losses
are built from recipe specs by :mod:`ldct.models.specs` and :mod:`ldct.losses.build`.
"""
