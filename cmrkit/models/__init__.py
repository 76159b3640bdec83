"""Networks of the kit.

Submodules (imported on demand, so that importing :mod:`cmrkit.models` stays cheap):

- :mod:`cmrkit.models.smcvae` -- sparse multi-channel VAE (chapter 4) and its comparison variants.
- :mod:`cmrkit.models.segmenter` -- 2D short-axis segmenter (chapter 4's segmentation check, chapter
  5's image-mask consistency); applied to volumes and real data by :mod:`cmrkit.segment`.
- :mod:`cmrkit.models.baselines` -- the thesis' comparison generators: 3D VAE and 3D LSGAN (chapter 5),
  CGAN, CVAE and CHeart (chapter 6), on MONAI blocks (encoder/decoder convolutions, PatchDiscriminator,
  PatchAdversarialLoss).

Models know sizes, not chapters: each takes its own config dataclass; a chapter maps its profile
section onto it. Training for every model goes through :func:`cmrkit.train.fit`.
"""

__all__: list[str] = []
