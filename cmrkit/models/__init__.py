"""Networks of the kit.

Submodules (imported on demand, so that importing :mod:`cmrkit.models` stays cheap):

- :mod:`cmrkit.models.smcvae` -- sparse multi-channel VAE (chapter 4) and its comparison variants.
- :mod:`cmrkit.models.segmenter` -- cine segmenter (chapter 4 evaluation).

Training for every model goes through :func:`cmrkit.train.fit`.
"""

__all__: list[str] = []
