"""Acquisition geometry, the patient/LV frames and NIfTI affines of the phantom.

World coordinates are NIfTI RAS+ millimetres (x to the patient's right, y anterior, z superior).
The *LV frame* (see :mod:`cmrkit.phantom.motion`) has origin at the epicardial apex at ED, in-plane
unit axes ``a``, ``b`` (the cine image axes i and j) and ``w`` along the long axis towards the base::

    world = origin + x a + y b + z w

Short-axis slices are planes of constant ``z`` (the stack is planned perpendicular to the LV long
axis). The cine stack runs from base to apex (slice 0 basal), so the affine's third column is
``-w * slice_spacing``. Tagging slices share the patient frame and orientation but have their own
pixel size, matrix and field-of-view centre; ``tag_k.nii.gz`` sits exactly at the centre plane of
a chosen cine slice (thesis §4.3.2, Fig. 4.3: cine and tagging share one patient coordinate system).

Acquisition defaults (UK Biobank, thesis §4.3.1 and Petersen et al. 2016, JCMR 18:8): cine 1.8 mm
in-plane (thesis 1.83 mm), 8 mm slices every 10 mm, 50 frames; tagging 1.4 mm in-plane, 3 slices,
~20 frames every 41 ms (thesis TR 41.05 ms), 6 mm tag spacing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["Geometry", "TAG_PHASE_MODES", "PatientFrame", "PlaneGrid", "patient_frame", "rotation_about"]


#: values of :attr:`Geometry.tag_phase`
TAG_PHASE_MODES = ("random", "anchored")
#: tag grid angle of ``tag_phase="anchored"`` (degrees, LV frame = image axes)
ANCHORED_TAG_ANGLE_DEG = 45.0


@dataclass(frozen=True)
class Geometry:
    """Image geometry and rendering options of a phantom cohort.

    Attributes
    ----------
    matrix, pixel_mm : cine in-plane matrix (square) and pixel size.
    slices, slice_thickness_mm, slice_spacing_mm : cine short-axis stack.
    cine_frames : frames per cardiac cycle (frame 0 = ED at the R wave).
    tag_frames, tag_spacing_mm, tag_pixel_mm : tagging sequence (3 slices basal/mid/apical).
    tag_matrix : tagging in-plane matrix; 0 chooses one that covers the cine field of view.
    tag_slice_thickness_mm : tagging slice thickness.
    tag_frame_ms : time between tagging frames (thesis: TR 41.05 ms); shortened when 20 frames
        would not fit in the R-R interval.
    slice_samples : odd number of sub-planes across the slice profile (partial volume through-plane).
    supersample : in-plane supersampling factor of the static anatomy (in-plane partial volume of
        the moving heart is rendered analytically with pixel-wide edge ramps).
    noise : add Rician noise (switch off for ground-truth checks).
    tag_phase : placement of the tag grid. ``"random"`` (default, as in real acquisitions, where the
        grid is laid in scanner coordinates): every subject draws its grid angle (40-50 degrees) and
        phase offsets, so the tag phase relative to the anatomy cannot be predicted from cine.
        ``"anchored"``: angle 45 degrees and zero phase offsets in the LV frame, so that a crossing
        of two tag lines lies on the LV long axis (the LV centre of every short-axis plane, the mid
        tagging level included): the grid is fixed relative to the heart. It is part of the cohort
        spec, so changing it regenerates a cohort.
    """

    matrix: int = 128
    pixel_mm: float = 1.8
    slices: int = 10
    slice_thickness_mm: float = 8.0
    slice_spacing_mm: float = 10.0
    cine_frames: int = 50
    tag_frames: int = 20
    tag_spacing_mm: float = 6.0
    tag_pixel_mm: float = 1.4
    tag_matrix: int = 0
    tag_slice_thickness_mm: float = 8.0
    tag_frame_ms: float = 41.05
    slice_samples: int = 3
    supersample: int = 2
    noise: bool = True
    tag_phase: str = "random"

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"Geometry: {msg}")

        need(
            isinstance(self.matrix, int) and self.matrix >= 16, f"matrix must be an integer >= 16, got {self.matrix!r}"
        )
        need(self.pixel_mm > 0, f"pixel_mm must be > 0, got {self.pixel_mm!r}")
        need(isinstance(self.slices, int) and self.slices >= 3, f"slices must be an integer >= 3, got {self.slices!r}")
        need(self.slice_thickness_mm > 0 and self.slice_spacing_mm > 0, "slice thickness and spacing must be > 0")
        need(
            isinstance(self.cine_frames, int) and self.cine_frames >= 2,
            f"cine_frames must be >= 2, got {self.cine_frames!r}",
        )
        need(
            isinstance(self.tag_frames, int) and self.tag_frames >= 2,
            f"tag_frames must be >= 2, got {self.tag_frames!r}",
        )
        need(
            self.tag_spacing_mm > 2 * self.tag_pixel_mm,
            f"tag_spacing_mm ({self.tag_spacing_mm}) must exceed two tagging pixels ({2 * self.tag_pixel_mm} mm)",
        )
        need(
            self.tag_pixel_mm > 0 and self.tag_slice_thickness_mm > 0 and self.tag_frame_ms > 0,
            "tag_pixel_mm, tag_slice_thickness_mm and tag_frame_ms must be > 0",
        )
        need(
            isinstance(self.tag_matrix, int) and (self.tag_matrix == 0 or self.tag_matrix >= 16),
            f"tag_matrix must be 0 (auto) or an integer >= 16, got {self.tag_matrix!r}",
        )
        need(
            isinstance(self.slice_samples, int) and self.slice_samples >= 1 and self.slice_samples % 2 == 1,
            f"slice_samples must be an odd integer >= 1, got {self.slice_samples!r}",
        )
        need(
            isinstance(self.supersample, int) and self.supersample >= 1,
            f"supersample must be >= 1, got {self.supersample!r}",
        )
        need(
            self.tag_phase in TAG_PHASE_MODES,
            f"tag_phase must be one of {', '.join(TAG_PHASE_MODES)}, got {self.tag_phase!r}",
        )

    @property
    def fov_mm(self) -> float:
        return self.matrix * self.pixel_mm

    @property
    def tag_matrix_resolved(self) -> int:
        """Tagging matrix: ``tag_matrix`` or the even size that covers the cine field of view."""
        if self.tag_matrix:
            return self.tag_matrix
        return int(2 * math.ceil(self.fov_mm / self.tag_pixel_mm / 2.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Geometry:
        """Build from a mapping (e.g. ``cfg.phantom``); unknown keys (n_subjects, workers, ...) are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: data[k] for k in data if k in names}
        for k, v in list(kw.items()):
            default = getattr(cls, k)
            if isinstance(default, bool):
                kw[k] = bool(v)
            elif isinstance(default, int):
                if isinstance(v, float) and not v.is_integer():
                    raise ValueError(f"Geometry: {k} must be an integer, got {v!r}")
                kw[k] = int(v)
            elif isinstance(default, float):
                kw[k] = float(v)
            elif isinstance(default, str):
                if not isinstance(v, str):
                    raise ValueError(f"Geometry: {k} must be a string, got {v!r}")
                kw[k] = v
        return cls(**kw)


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 right-handed rotation matrix about a unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


@dataclass(frozen=True)
class PatientFrame:
    """LV frame in world (RAS+ mm) coordinates: ``world = origin + x a + y b + z w``."""

    origin: tuple[float, float, float]
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    w: tuple[float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        """3x3 with columns a, b, w."""
        return np.stack([np.asarray(self.a), np.asarray(self.b), np.asarray(self.w)], axis=1)

    def to_world(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """LV-frame points -> world, shape ``(..., 3)``."""
        p = np.stack(np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)), -1)
        return p @ self.matrix.T + np.asarray(self.origin)

    def from_world(self, p: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` -> LV-frame ``(..., 3)``."""
        return (np.asarray(p, float) - np.asarray(self.origin)) @ self.matrix

    def inplane_direction(self, world_dir: np.ndarray) -> tuple[float, float]:
        """Unit in-plane (x, y) direction of the projection of a world direction on the SAX plane."""
        d = np.asarray(world_dir, float)
        v = np.array([d @ np.asarray(self.a), d @ np.asarray(self.b)])
        n = np.linalg.norm(v)
        if n < 1e-9:
            raise ValueError("direction is perpendicular to the short-axis plane")
        return float(v[0] / n), float(v[1] / n)

    def world_dir_in_frame(self, world_dir: np.ndarray) -> np.ndarray:
        """Components ``(x, y, z)`` of a world direction in the LV frame."""
        return np.asarray(world_dir, float) @ self.matrix


def patient_frame(
    *,
    long_axis_azimuth_deg: float,
    long_axis_elevation_deg: float,
    inplane_rotation_deg: float,
    apex_world: tuple[float, float, float],
) -> PatientFrame:
    """Build the LV frame from anatomical angles.

    The base-to-apex direction points to the patient's left (-x) and anterior (+y) at
    ``long_axis_azimuth_deg`` from the anterior direction in the axial plane, and inferior (-z)
    at ``long_axis_elevation_deg`` below it (typical values 45 and 30 degrees). The image axes
    follow the usual short-axis display: ``a`` (image i, to the right of the viewer when displayed
    as ``img[:, :, k].T``) towards the patient's left, ``b`` (image j, downwards) from anterior
    towards inferior/posterior, then rotated in-plane by ``inplane_rotation_deg``.
    """
    az, el = math.radians(long_axis_azimuth_deg), math.radians(long_axis_elevation_deg)
    u_apex = np.array([-math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), -math.sin(el)])
    w = -u_apex / np.linalg.norm(u_apex)
    left = np.array([-1.0, 0.0, 0.0])
    a = left - (left @ w) * w
    a /= np.linalg.norm(a)
    b = np.cross(w, a)
    ant_inf = np.array([0.0, -1.0, -1.0])  # from anterior towards inferior/posterior
    if b @ ant_inf < 0:
        b = -b
    R = rotation_about(w, math.radians(inplane_rotation_deg))
    a, b = R @ a, R @ b
    return PatientFrame(tuple(map(float, apex_world)), tuple(map(float, a)), tuple(map(float, b)), tuple(map(float, w)))


@dataclass(frozen=True)
class PlaneGrid:
    """A square in-plane pixel grid of short-axis slices in the LV frame.

    Pixel ``(i, j)`` (first, second NIfTI axis) has LV-frame coordinates
    ``(x, y) = centre + Rot(rotation) [(i - (n-1)/2) pixel, (j - (n-1)/2) pixel]``. Slice ``k`` of
    a stack of ``len(z)`` slices lies at level ``z[k]``; the affine's third column is
    ``-w * step`` (base to apex) with ``step`` the slice spacing (or the thickness of a single slice).
    """

    n: int
    pixel: float
    center: tuple[float, float]
    rotation: float = 0.0

    def xy(self, sub: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """LV-frame coordinates of the pixel centres (``sub = 1``) or of ``sub x sub`` sub-samples,
        arrays of shape ``(n*sub, n*sub)`` indexed ``[i, j]``."""
        off = (np.arange(self.n * sub) + 0.5) / sub - 0.5 - (self.n - 1) / 2.0
        u = off * self.pixel
        U, V = np.meshgrid(u, u, indexing="ij")
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return self.center[0] + c * U - s * V, self.center[1] + s * U + c * V

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`xy`: LV-frame ``(x, y)`` -> continuous pixel ``(i, j)``."""
        dx, dy = np.asarray(x) - self.center[0], np.asarray(y) - self.center[1]
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        U, V = c * dx + s * dy, -s * dx + c * dy
        return U / self.pixel + (self.n - 1) / 2.0, V / self.pixel + (self.n - 1) / 2.0

    def axes_xy(self) -> np.ndarray:
        """2x2 with columns the LV-frame directions of the i and j axes (unit)."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]])

    def affine(self, frame: PatientFrame, z_first: float, step: float) -> np.ndarray:
        """4x4 voxel-to-world (RAS+ mm) matrix; voxel ``(0, 0, k)`` is at level ``z_first - k step``."""
        A = np.asarray(frame.a)
        B = np.asarray(frame.b)
        W = np.asarray(frame.w)
        ax = self.axes_xy()
        col_i = (ax[0, 0] * A + ax[1, 0] * B) * self.pixel
        col_j = (ax[0, 1] * A + ax[1, 1] * B) * self.pixel
        col_k = -W * step
        h = -(self.n - 1) / 2.0 * self.pixel
        x0 = self.center[0] + ax[0, 0] * h + ax[0, 1] * h
        y0 = self.center[1] + ax[1, 0] * h + ax[1, 1] * h
        t = frame.to_world(x0, y0, z_first)
        M = np.eye(4)
        M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = col_i, col_j, col_k, t
        return M
