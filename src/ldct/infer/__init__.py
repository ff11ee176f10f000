"""Denoising files: ``ldct denoise`` as a library call (:mod:`ldct.infer.pipeline`), photographs
(:mod:`ldct.infer.photos`) and the training-domain check (:mod:`ldct.infer.domain`). The network itself is
run by :class:`ldct.Denoiser`."""
