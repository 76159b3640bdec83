"""Tag tracking on SPAMM-tagged MRI: learned and harmonic-phase (HARP) tracking of Ferdian landmark grids.

The thesis (§4.2.2, §4.3.6) tracks 24x7 myocardial landmarks (Ferdian et al. 2020) with a CNN+RNN
trained on UK Biobank annotations, which are not public. The kit has two trackers
(:mod:`cmrkit.tagging.trackers`, ``cmrkit track --tracker``, profile key ``ch4.tracker``):

* ``learned`` (default; :mod:`cmrkit.tagging.learned`): networks the kit trains itself on phantom tagging
  rendered with the variation of real acquisitions (:mod:`cmrkit.tagging.acquisition`: tag fading to and
  beyond UK Biobank's, noise, blur, contrast, coil shading, tag spacing and pixel size, zero padding,
  missing frames), in the spirit of Loecher et al. (*Med Image Anal* 2021), who trained on simulated
  tagging only and tracked in vivo tags within -0.02 px (95 % range -0.73 to +0.69 px). A per-point
  trajectory network on the sequence's patches, sampled on a grid tied to the tag period, and the smooth
  wall model of :mod:`cmrkit.tagging.wall` (an optional Lagrangian refiner, measured worse, is off in the
  shipped profiles). Trained once per profile (``tagging`` section) and cached in ``runs/``.
* ``harp`` (:func:`track_landmarks`): harmonic phase (HARP; Osman, Kerwin, McVeigh & Prince, *Magn Reson
  Med* 42:1048-1060, 1999; Osman, McVeigh & Prince, *IEEE TMI* 19:186-202, 2000) with a wall model and
  masked local fits, described below. It needs no training; it is accurate on the phantom's slowly fading
  tags but drifts when tags fade as in real FLASH tagging (numbers in ``benchmarks/README.md``).

Principle
---------
1. **Harmonic peaks.** A grid-tagged image ``a(x) f(X)`` (``X`` = material position at tagging)
   has spectral peaks at ``±k_1``, ``±k_2`` (the two tag directions). :func:`detect_harmonic_peaks`
   finds them on the first frames' spectrum (Hann window, ``|f|``-whitened magnitude, annulus of
   plausible tag spacings, sub-bin refinement); the tag spacing is ``2 pi / |k_i|`` pixels.
2. **Harmonic phase.** :func:`harmonic_images` band-passes each peak (Gaussian around ``+k_i``):
   ``I_i = A_i exp(j phi_i)``. The phase is material, ``phi_i(x, t) = k_i . X(x, t)`` (mod 2 pi),
   whatever the tag fading and the anatomy ``a``.
3. **Tracking.** A material point keeps its phase: at frame ``t`` it solves
   ``W(phi(x, t) - phi(x_0, 0)) = 0`` (``W`` wraps to (-pi, pi]). Newton steps
   ``x <- x - [grad phi]^{-1} W(phi - phi*)`` with ``grad phi_i = Im(conj(I_i) grad I_i) / |I_i|^2``
   (no unwrapping) start from the previous frame's motion extrapolated in time. The target is always
   frame 0's phase, so errors do not accumulate over frames.

Why more than plain HARP (measured with :func:`synthetic_tagged_ring`, see ``benchmarks/tracking.py``)
------------------------------------------------------------------------------------------------------
The band-pass averages phase over ~1/(bandwidth |k|) pixels, which is a large part of the thin
myocardial wall (6-8 pixels at UK Biobank / phantom resolution): the endocardial and epicardial
landmarks pick up phase from blood and background, and the transmural displacement gradient is
smoothed. Plain HARP on the 168 landmarks (``method="classic"``) therefore underestimates the
endocardial E_cc (bias ~+0.04 on ring 0) and E_rr (bias ~-0.09 of 0.30). The default
``method="model"`` (see :func:`track_landmarks`) tracks every wall pixel, fits a smooth
displacement model of the wall (circumferential harmonics x transmural polynomial; robust,
regularised) and then re-estimates the phase of every point by a *masked local fit* of the tag
pattern whose phase shape follows the current model, using wall pixels only. Measured with
``benchmarks/tracking.py`` (ES bias = tracked - truth):

====================================  ==============  =============  ==============
data                                  landmark error  E_cc bias      E_rr bias
====================================  ==============  =============  ==============
synthetic ring, 3.4-5 px tags: model  0.10-0.27 px    +0.002         -0.015..-0.027
same, classic                         0.17-0.34 px    +0.010..0.017  -0.09..-0.11
kit phantom, 12 slices: model         0.46 mm         +0.004         -0.13
same, classic                         0.60 mm         +0.034         -0.17
====================================  ==============  =============  ==============

The price is speed: ~0.7 slices/s (model) against ~14 slices/s (classic) for 20 frames of
128x128 on one CPU core (:func:`track_sequences` parallelises over slices).

Coordinates: pixel ``(row i, column j)`` is the point ``(x = j, y = i)``, the landmark convention
of :mod:`cmrkit.strain`. The harmonic images are demodulated (``B_i = I_i exp(-j k_i . x)``) before
sub-pixel interpolation, so interpolation acts on a smooth signal.

Landmark initialisation: from a file (Ferdian's frame-0 landmarks), from a myocardium mask
(:func:`init_landmarks_from_mask`), or from the tagged images alone
(:func:`cmrkit.tagging.localise.localise_lv_wall`: the ring of tissue that keeps its tags and contracts;
less precise at the epicardium than an annotation, see its measurements).

Limits: in-plane motion only (through-plane motion brings other material into the slice; HARP
cannot see it); frame-to-frame motion must stay below half a tag period after the temporal
prediction; tags must still be visible (late-diastolic frames of real SPAMM have faded tags, so
errors grow towards the end of the cycle).

Modules, each importing only those before it: :mod:`~cmrkit.tagging.harp` (tag peaks, harmonic images,
phase sampling), :mod:`~cmrkit.tagging.grid` (the landmark grid on a mask), :mod:`~cmrkit.tagging.wall`
(the smooth wall-displacement model), :mod:`~cmrkit.tagging.tracker` (HARP landmark tracking),
:mod:`~cmrkit.tagging.localise` (the LV wall found on the tagging itself), :mod:`~cmrkit.tagging.synthetic`
(an analytic test sequence), :mod:`~cmrkit.tagging.acquisition` (phantom tagging with realistic acquisition
variation), :mod:`~cmrkit.tagging.learned` (the learned tracker), :mod:`~cmrkit.tagging.trackers` (trackers
by name), :mod:`~cmrkit.tagging.cli` (``cmrkit track``).
"""

from .grid import init_landmarks_from_mask
from .harp import HarmonicPeaks, detect_harmonic_peaks, harmonic_images, harp_phase
from .localise import LVWall, auto_init_landmarks, localise_lv_wall
from .synthetic import SyntheticTagged, synthetic_tagged_ring
from .tracker import landmark_error, track_landmarks, track_sequences
from .trackers import TRACKERS, compare_trackers, get_tracker, track_all

__all__ = [
    "TRACKERS",
    "HarmonicPeaks",
    "LVWall",
    "SyntheticTagged",
    "auto_init_landmarks",
    "compare_trackers",
    "detect_harmonic_peaks",
    "get_tracker",
    "harmonic_images",
    "harp_phase",
    "init_landmarks_from_mask",
    "landmark_error",
    "localise_lv_wall",
    "synthetic_tagged_ring",
    "track_landmarks",
    "track_all",
    "track_sequences",
]
