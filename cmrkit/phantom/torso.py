"""Static torso around the heart: body wall, lungs, liver, stomach, aorta, spine, mediastinal fat.

Shapes are anchored to anatomical directions (patient right ``e_R``, anterior ``e_A``, superior
``e_S``, expressed in the LV frame) relative to the heart centre, so they land where they belong
in an oblique short-axis view: lungs dark on both sides, chest wall and subcutaneous fat
anteriorly, the liver (right) and stomach (left) under the diaphragm in apical slices, descending
aorta and spine posteriorly. The torso does not move with the cardiac cycle (breath-hold cine).
Tissue classes are the keys of :data:`cmrkit.phantom.contrast.TISSUES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .contrast import TISSUE_INDEX, TISSUES

__all__ = ["Torso", "make_torso"]


@dataclass(frozen=True)
class Torso:
    """Torso geometry in the LV frame (all lengths mm)."""

    heart_center: tuple[float, float, float]
    e_r: tuple[float, float, float]
    e_a: tuple[float, float, float]
    e_s: tuple[float, float, float]
    body_center: tuple[float, float]  # (right, anterior) offset from the heart centre
    body_axes: tuple[float, float]  # half width (left-right), half depth (antero-posterior)
    subcut_fat_mm: float
    muscle_mm: float
    liver: tuple[tuple[float, float, float], tuple[float, float, float]]  # centre (R, A, S), semi-axes
    stomach: tuple[tuple[float, float, float], tuple[float, float, float]]
    mediastinal_fat: tuple[tuple[float, float, float], tuple[float, float, float]]
    aorta: tuple[float, float, float]  # (R, A) centre, radius
    spine: tuple[float, float, float]  # vertebral body (R, A) centre, radius
    vessels: tuple[tuple[float, float, float, float], ...] = field(default_factory=tuple)  # (R, A, S, radius)
    coils: tuple[tuple[float, float, float], ...] = field(default_factory=tuple)  # (R, A, S)

    def _rass(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dy, dz = x - self.heart_center[0], y - self.heart_center[1], z - self.heart_center[2]
        er, ea, es = (np.asarray(v, np.float32) for v in (self.e_r, self.e_a, self.e_s))
        return (
            dx * er[0] + dy * er[1] + dz * er[2],
            dx * ea[0] + dy * ea[1] + dz * ea[2],
            dx * es[0] + dy * es[1] + dz * es[2],
        )

    def classes(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Tissue class index (``TISSUE_INDEX``) at LV-frame points."""
        R, A, S = self._rass(x, y, z)
        cls = np.full(np.broadcast_shapes(np.shape(R), np.shape(S)), TISSUE_INDEX["air"], np.int8)
        bx, by = self.body_center
        ax, ay = self.body_axes

        def ell2(a: float, b: float) -> np.ndarray:
            return ((R - bx) / a) ** 2 + ((A - by) / b) ** 2

        body = ell2(ax, ay) < 1.0
        t1 = self.subcut_fat_mm
        t2 = t1 + self.muscle_mm
        inner1 = ell2(ax - t1, ay - t1) < 1.0
        cage = ell2(ax - t2, ay - t2) < 1.0
        cls[body] = TISSUE_INDEX["fat"]
        cls[inner1] = TISSUE_INDEX["muscle"]
        cls[cage] = TISSUE_INDEX["lung"]

        def ellipsoid(spec: Any) -> np.ndarray:
            (cr, ca, cs), (sr, sa, ss) = spec
            return ((R - cr) / sr) ** 2 + ((A - ca) / sa) ** 2 + ((S - cs) / ss) ** 2 < 1.0

        lung = cls == TISSUE_INDEX["lung"]
        zmin, zmax = float(np.min(z)), float(np.max(z))
        er, ea, es = (np.asarray(v, float) for v in (self.e_r, self.e_a, self.e_s))
        for vr, va, vs, rad in self.vessels:
            cz = self.heart_center[2] + vr * er[2] + va * ea[2] + vs * es[2]  # LV-frame level of the centre
            if cz + rad < zmin or cz - rad > zmax:
                continue
            hit = (R - vr) ** 2 + (A - va) ** 2 + (S - vs) ** 2 < rad * rad
            cls[hit & lung] = TISSUE_INDEX["blood"]
        cls[cage & ellipsoid(self.mediastinal_fat)] = TISSUE_INDEX["fat"]
        cls[cage & ellipsoid(self.liver)] = TISSUE_INDEX["liver"]
        cls[cage & ellipsoid(self.stomach)] = TISSUE_INDEX["stomach"]
        ar, aa, arad = self.aorta
        cls[body & ((R - ar) ** 2 + (A - aa) ** 2 < arad**2)] = TISSUE_INDEX["blood"]
        sr, sa, srad = self.spine
        cls[body & ((R - sr) ** 2 + (A - sa) ** 2 < srad**2)] = TISSUE_INDEX["marrow"]
        cls[body & ((R - sr) ** 2 + (A - (sa - srad - 9.0)) ** 2 < 7.0**2)] = TISSUE_INDEX["fluid"]
        return cls

    def fractions(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, sub: int) -> np.ndarray:
        """Class fractions ``(n_classes, ni, nj)`` of pixels from ``sub x sub`` sub-samples.

        ``x, y`` are sub-sample coordinates of shape ``(ni*sub, nj*sub)``; ``z`` a scalar level.
        """
        cls = self.classes(x, y, np.asarray(z, np.float32))
        ni, nj = cls.shape[0] // sub, cls.shape[1] // sub
        out = np.zeros((len(TISSUES), ni, nj), np.float32)
        blocks = cls.reshape(ni, sub, nj, sub)
        for c in np.unique(cls):
            out[int(c)] = (blocks == c).mean(axis=(1, 3))
        return out

    def coil_gain(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, depth_mm: float, ref: tuple[float, float, float]
    ) -> np.ndarray:
        """Root-sum-of-squares surface-coil sensitivity normalised to 1 at ``ref`` (LV frame)."""
        R, A, S = self._rass(x, y, z)
        Rr, Ar, Sr = self._rass(*(np.asarray(v, np.float32) for v in ref))

        def rss(r: np.ndarray, a: np.ndarray, s: np.ndarray) -> np.ndarray:
            acc = np.zeros(np.broadcast_shapes(np.shape(r), np.shape(s)), np.float32)
            for cr, ca, cs in self.coils:
                d2 = (r - cr) ** 2 + (a - ca) ** 2 + (s - cs) ** 2
                acc += (1.0 / (1.0 + d2 / depth_mm**2)) ** 2
            return np.sqrt(acc)

        return (rss(R, A, S) / rss(Rr, Ar, Sr)).astype(np.float32)


def make_torso(
    draws: Mapping[str, Any],
    *,
    heart_center: np.ndarray,
    e_r: np.ndarray,
    e_a: np.ndarray,
    e_s: np.ndarray,
    bmi: float,
    rng: np.random.Generator,
) -> Torso:
    """Place the torso structures for one subject (sizes scale with ``draws['body_scale']`` and BMI)."""
    s = float(draws.get("body_scale", 1.0))
    fat = float(np.clip(6.0 + 1.4 * (bmi - 22.0), 4.0, 45.0))
    ax, ay = 160.0 * s + 0.8 * fat, 105.0 * s + 0.8 * fat
    # the anterior inner chest wall lies ~55 mm in front of the heart centre (RV against the sternum)
    bx, by = 40.0 * s, 55.0 * s - (ay - fat - 12.0 * s)
    cage_post = by - (ay - fat - 12.0 * s)
    spine = (bx, cage_post + 28.0, 17.0 * s)
    aorta = (bx - 26.0 * s, cage_post + 58.0, 11.5 * s)
    liver = ((bx + 45.0 * s, by + 35.0 * s, -100.0 * s), (115.0 * s, 95.0 * s, 72.0 * s))
    stomach = ((-65.0 * s, by + 40.0 * s, -105.0 * s), (50.0 * s, 45.0 * s, 42.0 * s))
    med = ((15.0 * s, 48.0 * s, 10.0 * s), (50.0 * s, 14.0 * s, 70.0 * s))
    vessels = []
    for _ in range(150):
        vessels.append(
            (
                float(rng.uniform(-150, 170) * s),
                float(rng.uniform(-90, 60) * s),
                float(rng.uniform(-60, 80) * s),
                float(rng.uniform(1.5, 3.5)),
            )
        )
    coils = []
    for k in range(4):  # anterior and posterior arrays, 4 elements each
        off = (-60.0 + 40.0 * k) * s
        coils.append((bx + off, by + ay + 15.0, 0.0))
        coils.append((bx + off, by - ay - 25.0, 0.0))
    return Torso(
        heart_center=tuple(map(float, heart_center)),
        e_r=tuple(map(float, e_r)),
        e_a=tuple(map(float, e_a)),
        e_s=tuple(map(float, e_s)),
        body_center=(bx, by),
        body_axes=(ax, ay),
        subcut_fat_mm=fat,
        muscle_mm=12.0 * s,
        liver=liver,
        stomach=stomach,
        mediastinal_fat=med,
        aorta=aorta,
        spine=spine,
        vessels=tuple(vessels),
        coils=tuple(coils),
    )
