"""The kit's label convention for cardiac short-axis segmentations, written once.

Every label map in the kit (phantom, readers, segmenter, metrics, figures) uses

====== ================= ==========
value  structure         short name
====== ================= ==========
0      background        --
1      LV blood pool     LV
2      LV myocardium     Myo
3      RV blood pool     RV
====== ================= ==========

which is the convention of UK Biobank (Petersen et al. 2016; the ``ukbb_cardiac`` network of Bai et
al. 2018) and of M&Ms (Campello et al. 2021). ACDC (Bernard et al. 2018) numbers the ventricles the
other way round (1 RV, 2 Myo, 3 LV); its readers remap with :func:`remap_acdc_labels`.

:data:`LABEL_COLOURS` gives every structure one colour, used for contours and for the translucent
overlays of :data:`cmrkit.figures.LABEL_CMAP` (LV red, myocardium green, RV blue).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BACKGROUND",
    "LV_BLOOD",
    "LV_MYO",
    "RV_BLOOD",
    "LABELS",
    "LABEL_NAMES",
    "LABEL_COLOURS",
    "N_CLASSES",
    "ACDC_TO_KIT",
    "remap_acdc_labels",
]

BACKGROUND, LV_BLOOD, LV_MYO, RV_BLOOD = 0, 1, 2, 3
#: foreground label -> short name (table rows, Dice columns, segmenter logs)
LABELS: dict[int, str] = {LV_BLOOD: "LV", LV_MYO: "Myo", RV_BLOOD: "RV"}
#: foreground label -> full name (figure legends)
LABEL_NAMES: dict[int, str] = {LV_BLOOD: "LV blood pool", LV_MYO: "LV myocardium", RV_BLOOD: "RV blood pool"}
#: foreground label -> colour (matplotlib's tab:red, tab:green, tab:blue)
LABEL_COLOURS: dict[int, str] = {LV_BLOOD: "#d62728", LV_MYO: "#2ca02c", RV_BLOOD: "#1f77b4"}
#: number of classes including the background (the segmenter's output channels)
N_CLASSES: int = 1 + len(LABELS)

#: ACDC label value -> kit label value (1 RV -> 3, 2 Myo -> 2, 3 LV -> 1)
ACDC_TO_KIT: dict[int, int] = {0: BACKGROUND, 1: RV_BLOOD, 2: LV_MYO, 3: LV_BLOOD}


def remap_acdc_labels(labels: np.ndarray) -> np.ndarray:
    """Map ACDC labels (1 RV, 2 Myo, 3 LV) to the kit convention (1 LV, 2 Myo, 3 RV); uint8 out.

    Raises ``ValueError`` when a value lies outside 0..3.
    """
    lut = np.zeros(256, dtype=np.uint8)
    for k, v in ACDC_TO_KIT.items():
        lut[k] = v
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() > 3):
        raise ValueError(f"labels: ACDC label values must be in 0..3, got range {arr.min()}..{arr.max()}")
    return lut[arr.astype(np.uint8)]
