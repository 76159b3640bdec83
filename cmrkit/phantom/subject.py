"""One phantom subject: its random parameters, generation, ground truth and measured phenotypes.

:func:`sample_subject_params` draws everything random about subject ``index`` of a cohort from
``numpy.random.SeedSequence(seed, spawn_key=(index, 0))``; :func:`generate_subject` renders it with a
second stream ``spawn_key=(index, 1)`` (noise, textures). A subject therefore depends only on
``(seed, index)`` and the geometry: the same in any cohort size, process pool or order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from .anatomy import MYO_DENSITY, calibrate_heart
from .contrast import CINE_CONTRAST_RANGES
from .covariates import COVARIATES, load_phenotype_model, phenotype_targets, sample_covariates, sample_pathology
from .geometry import ANCHORED_TAG_ANGLE_DEG, Geometry, PatientFrame, PlaneGrid, patient_frame
from .motion import cardiac_cycle
from .render import Scene, render_cine, render_tagging
from .tagging import N_LANDMARKS, landmark_material_grid, landmark_strain
from .torso import make_torso

__all__ = [
    "SubjectParams",
    "PhantomSubject",
    "sample_subject_params",
    "generate_subject",
    "build_scene",
    "scanner_tag_grid",
    "subject_id",
    "with_pathology",
    "PHENOTYPES",
    "TAG_SLICE_NAMES",
]

#: phenotype columns of the manifest (targets; measured values carry the suffix ``_measured``)
PHENOTYPES = (
    "lvedv_ml",
    "lvesv_ml",
    "lvef_pct",
    "lvm_g",
    "rvedv_ml",
    "rvesv_ml",
    "rvef_pct",
    "wall_thickness_mm",
    "peak_ecc",
)
TAG_SLICE_NAMES = ("basal", "mid", "apical")


def subject_id(index: int) -> str:
    """Folder / id of subject ``index``: ``PH0000``, ``PH0001``, ..."""
    return f"PH{int(index):04d}"


@dataclass(frozen=True)
class SubjectParams:
    """Every random choice about one subject (JSON-serialisable).

    Attributes
    ----------
    index, seed : position in the cohort and cohort seed (the subject's identity).
    covariates : age, sex, height_cm, weight_kg, smoking, alcohol, sbp, dbp, bsa.
    targets : healthy phenotype targets drawn from the covariate model (before the anatomy's
        feasibility projection and regional dysfunction).
    draws : shape, orientation, contrast and tagging randomness.
    pathology : None, or territory / kind / AHA segments / motion factors.
    """

    index: int
    seed: int
    covariates: dict[str, Any]
    targets: dict[str, float]
    draws: dict[str, Any]
    pathology: dict[str, Any] | None = None

    @property
    def subject_id(self) -> str:
        return subject_id(self.index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SubjectParams:
        return cls(
            int(d["index"]),
            int(d["seed"]),
            dict(d["covariates"]),
            dict(d["targets"]),
            dict(d["draws"]),
            None if d.get("pathology") is None else dict(d["pathology"]),
        )


def _rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    mk = lambda k: np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index), k)))
    return mk(0), mk(1)


def sample_subject_params(
    index: int, *, seed: int = 0, pathology_fraction: float = 0.15, model: Mapping[str, Any] | None = None
) -> SubjectParams:
    """Draw covariates, phenotype targets, pathology and shape/contrast randomness of one subject."""
    if not (0.0 <= float(pathology_fraction) <= 1.0):
        raise ValueError(f"pathology_fraction must be in [0, 1], got {pathology_fraction!r}")
    rng, _ = _rngs(seed, index)
    mdl = model or load_phenotype_model()
    cov = sample_covariates(rng, mdl)
    targets = phenotype_targets(cov, rng, mdl)
    u_path = float(rng.random())
    path = sample_pathology(rng, mdl)  # always drawn so other draws do not depend on the fraction
    pathology = path if u_path < float(pathology_fraction) else None
    U = lambda lo, hi: float(rng.uniform(lo, hi))
    bmi = cov["weight_kg"] / (cov["height_cm"] / 100.0) ** 2
    draws: dict[str, Any] = {
        "beta": U(2.0, 2.8),
        "apex_ratio": U(0.55, 0.8),
        "delta_top_mm": U(2.0, 7.0),
        "twist_apex_deg": U(7.0, 13.0),
        "twist_base_deg": U(2.0, 6.0),
        "twist_transmural": U(0.2, 0.4),
        "rv_theta_jitter_deg": float(rng.normal(0.0, 6.0)),
        "rv_half_angle_deg": U(65.0, 85.0),
        "rv_gamma": U(0.35, 0.7),
        "rv_long_ratio": U(0.7, 0.8),
        "rv_long_factor": U(1.2, 1.6),
        "rv_wall_mm": U(2.5, 4.0),
        "fat_mm": U(0.8, 2.5) + 0.1 * max(bmi - 25.0, 0.0),
        "fat_harmonics": [[U(0.1, 0.7), U(0.0, 2 * math.pi)] for _ in range(3)],
        "fat_groove_mm": U(1.5, 4.0),
        "fat_av_mm": U(3.0, 6.0),
        "papillary_radius_mm": U(3.0, 4.5),
        "papillary_offsets_deg": [float(rng.normal(0, 10)), float(rng.normal(0, 10))],
        "long_axis_azimuth_deg": float(rng.normal(45.0, 6.0)),
        "long_axis_elevation_deg": float(rng.normal(30.0, 6.0)),
        "inplane_rotation_deg": U(-12.0, 12.0),
        "heart_center_world": [float(v) for v in rng.normal([-15.0, 15.0, 20.0], 10.0)],
        "fov_offset_mm": [U(-10.0, 10.0), U(-10.0, 10.0)],
        "tag_fov_offset_mm": [U(-15.0, 15.0), U(-15.0, 15.0)],
        "body_scale": float(math.sqrt(cov["height_cm"] / 170.0) * rng.uniform(0.95, 1.05)),
        "torso_seed": int(rng.integers(0, 2**31 - 1)),
        # contrast
        "snr_myo": U(*CINE_CONTRAST_RANGES["snr_myo"]),
        "tag_snr": U(12.0, 25.0),
        "gain": U(500.0, 900.0),
        "tag_gain": U(400.0, 800.0),
        "blood_scale": U(*CINE_CONTRAST_RANGES["blood_scale"]),
        "myo_scale": U(*CINE_CONTRAST_RANGES["myo_scale"]),
        "fat_scale": U(0.85, 1.1),
        "tag_blood_scale": U(0.8, 1.1),
        "coil_depth_mm": U(120.0, 200.0),
        "texture": U(0.03, 0.07),
        # tagging
        "tag_angle_deg": U(40.0, 50.0),
        "tag_offsets": [U(0.0, 2 * math.pi), U(0.0, 2 * math.pi)],
        "tag_saturation": U(0.975, 0.99),
        "tau_wash_ms": U(60.0, 120.0),
        "tag_t0_ms": U(15.0, 30.0),
    }
    return SubjectParams(int(index), int(seed), cov, targets, draws, pathology)


def with_pathology(
    params: SubjectParams, segments: dict[int, float] | None, *, kind: str = "custom", territory: str = "custom"
) -> SubjectParams:
    """A copy of ``params`` with chosen regional dysfunction (or none).

    ``segments`` maps AHA segments (1-16) to the fraction of normal endocardial excursion kept
    (0 akinetic, ~0.5 hypokinetic); None or ``{}`` makes the subject healthy. Everything else about
    the subject stays the same, e.g.::

        p = with_pathology(sample_subject_params(3), {7: 0.0, 8: 0.0, 13: 0.3}, kind="akinetic")
    """
    if not segments:
        return SubjectParams(params.index, params.seed, params.covariates, params.targets, params.draws, None)
    for seg, f in segments.items():
        if not (1 <= int(seg) <= 16) or not (0.0 <= float(f) <= 1.0):
            raise ValueError(f"segments must map AHA segments 1..16 to factors in [0, 1], got {seg}: {f}")
    segs = sorted(int(k) for k in segments)
    path = {"territory": territory, "kind": kind, "segments": segs, "factors": [float(segments[k]) for k in segs]}
    return SubjectParams(params.index, params.seed, params.covariates, params.targets, params.draws, path)


@dataclass
class PhantomSubject:
    """A generated subject: images, labels, affines, ground truth and phenotypes.

    Attributes
    ----------
    cine : ``float32 (X, Y, Z, T)``; labels : ``uint8 (X, Y, Z, T)`` (0/1 LV/2 Myo/3 RV, every frame).
    affine : cine voxel-to-world (RAS+ mm). tagging : ``float32 (3, Xt, Yt, Tt)`` (basal, mid, apical).
    tag_affines : ``(3, 4, 4)``. ground_truth : arrays written to ``ground_truth.h5`` (see
    :mod:`cmrkit.phantom.writer`). targets / measured : phenotypes (manifest columns).
    """

    params: SubjectParams
    geometry: Geometry
    cine: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    tagging: np.ndarray
    tag_affines: np.ndarray
    ed_frame: int
    es_frame: int
    cine_times_ms: np.ndarray
    tag_times_ms: np.ndarray
    tag_slice_index: tuple[int, int, int]
    ground_truth: dict[str, np.ndarray]
    targets: dict[str, float]
    measured: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def subject_id(self) -> str:
        return self.params.subject_id

    @property
    def heart_rate(self) -> float:
        return 60000.0 / float(self.info["rr_ms"])

    def pathology_description(self) -> str:
        p = self.params.pathology
        if not p:
            return "none"
        segs = ",".join(str(s) for s in p["segments"])
        return f"{p['kind']} {p['territory']} segments {segs}"

    def manifest_row(self) -> dict[str, Any]:
        """One row of the cohort ``manifest.csv``."""
        cov = self.params.covariates
        row: dict[str, Any] = {"subject_id": self.subject_id}
        row.update({k: cov[k] for k in COVARIATES})
        row["bsa"] = cov["bsa"]
        row["heart_rate"] = round(self.heart_rate, 2)
        row["pathology"] = self.pathology_description()
        for k in PHENOTYPES:
            row[k] = round(float(self.targets[k]), 4)
        for k in PHENOTYPES:
            row[f"{k}_measured"] = round(float(self.measured[k]), 4)
        row["ed_frame"] = int(self.ed_frame)
        row["es_frame"] = int(self.es_frame)
        row["n_frames"] = int(self.cine.shape[3])
        row["rr_ms"] = round(float(self.info["rr_ms"]), 2)
        row["lv_length_mm"] = round(float(self.targets["lv_length_mm"]), 2)
        row["tag_slices"] = ";".join(str(k) for k in self.tag_slice_index)
        return row


def build_scene(params: SubjectParams, geometry: Geometry) -> tuple[Scene, dict[str, float], dict[str, Any]]:
    """Calibrate the heart of ``params`` at ``geometry`` and place it in the torso and image grids.

    Returns ``(scene, realised_targets, info)``.
    """
    cov, tg, d = params.covariates, params.targets, params.draws
    L = float(tg["lv_length_mm"])
    apex_from_center = 0.5 * L
    # frame: the heart centre (mid long axis) at the drawn world position
    tmp = patient_frame(
        long_axis_azimuth_deg=d["long_axis_azimuth_deg"],
        long_axis_elevation_deg=d["long_axis_elevation_deg"],
        inplane_rotation_deg=d["inplane_rotation_deg"],
        apex_world=(0.0, 0.0, 0.0),
    )
    w = np.asarray(tmp.w)
    apex = np.asarray(d["heart_center_world"]) - apex_from_center * w
    frame = patient_frame(
        long_axis_azimuth_deg=d["long_axis_azimuth_deg"],
        long_axis_elevation_deg=d["long_axis_elevation_deg"],
        inplane_rotation_deg=d["inplane_rotation_deg"],
        apex_world=tuple(apex),
    )
    e_r = frame.world_dir_in_frame([1.0, 0.0, 0.0])
    e_a = frame.world_dir_in_frame([0.0, 1.0, 0.0])
    e_s = frame.world_dir_in_frame([0.0, 0.0, 1.0])
    theta_ant = math.atan2(e_a[1], e_a[0])
    drv = e_r + 0.35 * e_a
    theta_rv = math.atan2(drv[1], drv[0]) + math.radians(d["rv_theta_jitter_deg"])
    sense = 1.0 if math.sin(theta_ant - theta_rv) >= 0 else -1.0
    handed = 1.0 if np.linalg.det(frame.matrix) > 0 else -1.0
    # apex turns counter-clockwise seen from the apex (negative right-handed rotation about w), base clockwise
    twist_apex = -handed * math.radians(d["twist_apex_deg"])
    twist_base = handed * math.radians(d["twist_base_deg"])

    hr = float(tg["heart_rate_bpm"])
    cycle = cardiac_cycle(hr, sex=int(cov["sex"]), age=float(cov["age"]))
    spacing = geometry.slice_spacing_mm
    z_slices = (L - d["delta_top_mm"]) - spacing * np.arange(geometry.slices)
    k_mid = int(np.argmin(np.abs(z_slices - 0.52 * L)))
    half = math.radians(d["rv_half_angle_deg"])
    pap = [
        theta_rv + sense * math.radians(120.0 + d["papillary_offsets_deg"][0]),
        theta_rv - sense * math.radians(120.0 + d["papillary_offsets_deg"][1]),
    ]
    calib_draws = dict(
        d, twist_apex=twist_apex, twist_base=twist_base, rv_theta=theta_rv, rv_half_angle=half, papillary_angles=pap
    )
    factors = None
    if params.pathology:
        factors = dict(zip(params.pathology["segments"], params.pathology["factors"]))
    heart, realised = calibrate_heart(
        targets=tg,
        draws=calib_draws,
        z_slices=z_slices,
        spacing=spacing,
        cycle=cycle,
        z_mid=float(z_slices[k_mid]),
        regional_factors=factors,
        theta_septum=theta_rv,
        sense=sense,
    )
    shape = heart.lv.shape
    s_long = heart.lv.motion.s_long
    # tagging slices: basal stays inside the LV at ES, apical keeps a cavity
    base_ok = [k for k in range(k_mid) if z_slices[k] <= L * (1.0 - s_long) - 4.0]
    k_base = base_ok[0] if base_ok else k_mid - 1
    apex_ok = [k for k in range(k_mid + 1, len(z_slices)) if z_slices[k] >= shape.z_apex_en + 0.2 * shape.c_en]
    k_apex = apex_ok[-1] if apex_ok else k_mid + 1
    if not (0 <= k_base < k_mid < k_apex < len(z_slices)):
        raise ValueError(
            f"cannot place basal/mid/apical tagging slices in {geometry.slices} slices at "
            f"{spacing} mm spacing for an LV of length {L:.0f} mm; use more slices"
        )

    rr = cycle.rr_ms
    cine_times = np.arange(geometry.cine_frames) * rr / geometry.cine_frames
    t0 = float(d["tag_t0_ms"])
    dt = min(geometry.tag_frame_ms, (rr - t0) / geometry.tag_frames)
    tag_times = t0 + dt * np.arange(geometry.tag_frames)

    rc = shape.a_ep + 0.5 * heart.rv.h_ed
    c0 = (0.5 * rc * math.cos(theta_rv) + d["fov_offset_mm"][0], 0.5 * rc * math.sin(theta_rv) + d["fov_offset_mm"][1])
    cine_grid = PlaneGrid(geometry.matrix, geometry.pixel_mm, c0)
    tag_grid = PlaneGrid(
        geometry.tag_matrix_resolved,
        geometry.tag_pixel_mm,
        (c0[0] + d["tag_fov_offset_mm"][0], c0[1] + d["tag_fov_offset_mm"][1]),
    )
    bmi = cov["weight_kg"] / (cov["height_cm"] / 100.0) ** 2
    torso = make_torso(
        d,
        heart_center=np.array([0.0, 0.0, 0.5 * L]),
        e_r=e_r,
        e_a=e_a,
        e_s=e_s,
        bmi=bmi,
        rng=np.random.default_rng(d["torso_seed"]),
    )
    # "snr_blood" (noise relative to blood) is the draw of parameters made before the myocardial-SNR model
    contrast = {
        k: d[k]
        for k in (
            "snr_myo",
            "snr_blood",
            "tag_snr",
            "gain",
            "tag_gain",
            "blood_scale",
            "myo_scale",
            "fat_scale",
            "tag_blood_scale",
            "coil_depth_mm",
            "texture",
        )
        if k in d
    }
    if geometry.tag_phase == "anchored":
        # a tag-line crossing on the LV long axis (x = y = 0 in the LV frame): zero phase offsets
        tag_angle, tag_offsets = math.radians(ANCHORED_TAG_ANGLE_DEG), (0.0, 0.0)
    elif geometry.tag_phase == "scanner":
        tag_angle, tag_offsets = scanner_tag_grid(frame, tag_grid, geometry)
    else:
        tag_angle, tag_offsets = math.radians(d["tag_angle_deg"]), tuple(d["tag_offsets"])
    tag = {
        "angle": tag_angle,
        "offsets": tag_offsets,
        "saturation": d["tag_saturation"],
        "tau_wash_ms": d["tau_wash_ms"],
        "order": 2,
        "flip_total_deg": 90.0,
        "spacing_mm": geometry.tag_spacing_mm,
    }
    scene = Scene(
        heart,
        torso,
        frame,
        cine_grid,
        tag_grid,
        z_slices,
        (k_base, k_mid, k_apex),
        cine_times,
        tag_times,
        contrast,
        tag,
    )
    info = {
        "rr_ms": rr,
        "theta_rv": theta_rv,
        "sense": sense,
        "handedness": handed,
        "landmark_theta0": theta_rv + sense * half,
        "tag_phase": geometry.tag_phase,
        "tag_angle_deg": math.degrees(tag_angle),
        "tag_offsets": [float(v) for v in tag_offsets],
    }
    return scene, realised, info


def scanner_tag_grid(frame: PatientFrame, tag_grid: PlaneGrid, geometry: Geometry) -> tuple[float, tuple[float, float]]:
    """LV-frame angle and phase offsets of a tag grid fixed in scanner coordinates (``tag_phase="scanner"``).

    The gradients of a SPAMM block modulate the magnetisation with phase ``k e_d . p + c_d`` at world
    position ``p`` (mm from the magnet's isocentre, the world origin here), ``e_d`` the in-plane tag
    direction at the protocol angle from the tagging image's first axis. With
    ``p = origin + x a + y b + z w`` (LV frame, :class:`PatientFrame`) and ``e_d . w = 0`` this is
    ``k (x cos t_d + y sin t_d) + k e_d . origin + c_d``: the LV-frame form that
    :func:`cmrkit.phantom.tagging.tag_phases` renders, with ``t_d`` the direction's LV-frame angle.
    """
    angle = math.radians(geometry.tag_angle_deg) + tag_grid.rotation  # tagging i axis -> LV frame
    k = 2.0 * math.pi / geometry.tag_spacing_mm
    origin = np.asarray(frame.origin, float)
    a, b = np.asarray(frame.a, float), np.asarray(frame.b, float)
    offsets = []
    for t, c_deg in zip((angle, angle + 0.5 * math.pi), geometry.tag_offset_deg):
        e = math.cos(t) * a + math.sin(t) * b
        offsets.append(float((k * float(e @ origin) + math.radians(c_deg)) % (2.0 * math.pi)))
    return angle, (offsets[0], offsets[1])


def displacement_stride(n: int) -> int:
    """Spatial stride of the stored displacement fields: 1 up to a 128 matrix, else 2 (size, speed)."""
    return 1 if n <= 128 else 2


def _ground_truth(scene: Scene, geometry: Geometry, theta0: float) -> dict[str, np.ndarray]:
    """Landmarks, exact and landmark strain, displacement fields and masks of the tagging slices."""
    heart, grid, frame = scene.heart, scene.tag_grid, scene.frame
    T = len(scene.tag_times_ms)
    n = grid.n
    stride = displacement_stride(n)
    nd = len(range(0, n, stride))
    lm_px = np.zeros((3, T, 2, N_LANDMARKS))
    lm_world = np.zeros((3, T, 3, N_LANDMARKS))
    ecc_ring = np.zeros((3, T, 7))
    err = np.zeros((3, T))
    disp = np.zeros((3, T, 2, nd, nd), np.float32)
    mask = np.zeros((3, nd, nd), np.uint8)
    xg, yg = grid.xy()
    xg, yg = xg[::stride, ::stride], yg[::stride, ::stride]
    axes = grid.axes_xy()
    th_dense = np.linspace(-np.pi, np.pi, 96, endpoint=False)
    states = [heart.state(float(t)) for t in scene.tag_times_ms]
    for s, z in enumerate(scene.tag_levels):
        R_en, R_ep = heart.lv.shape.radii(np.asarray(z))
        R, Th = landmark_material_grid(float(R_en), float(R_ep), theta0)
        X, Y = R * np.cos(Th), R * np.sin(Th)
        rings = R_en + (R_ep - R_en) * np.arange(7) / 6.0
        Rg, Tg = np.meshgrid(rings, th_dense, indexing="ij")
        Rxy = np.hypot(xg, yg)
        mask[s] = ((Rxy >= R_en) & (Rxy < R_ep)).astype(np.uint8)
        for t, st in enumerate(states):
            x, y, _ = heart.forward_apparent(X, Y, float(z), st)
            i, j = grid.to_pixel(x, y)
            lm_px[s, t] = np.stack([i, j])
            lm_world[s, t] = frame.to_world(x, y, np.full_like(x, z)).T
            Zt = float(z) / st.q
            e_rr, e_cc, _ = heart.lv.green_strain_polar(Rg, Tg, np.full_like(Rg, Zt), st)
            ecc_ring[s, t] = e_cc.mean(axis=1)
            err[s, t] = e_rr.mean()
            ux, uy, _ = heart.forward_apparent(xg.ravel(), yg.ravel(), float(z), st)
            du = np.stack([ux - xg.ravel(), uy - yg.ravel()])  # LV-frame mm
            dij = axes.T @ du  # along image i, j
            disp[s, t] = dij.reshape(2, nd, nd).astype(np.float32)
    lm_mm = lm_px * grid.pixel
    lmk = landmark_strain(lm_mm)
    return {
        "landmarks_px": lm_px.astype(np.float32),
        "landmarks_mm": lm_mm.astype(np.float32),
        "landmarks_world": lm_world.astype(np.float32),
        "ecc_exact": ecc_ring.mean(-1),
        "ecc_ring_exact": ecc_ring,
        "err_exact": err,
        "ecc_landmark": lmk["ecc"],
        "ecc_ring_landmark": lmk["ecc_ring"],
        "err_landmark": lmk["err"],
        "displacement": disp,
        "myocardium_mask_ed": mask,
        "displacement_stride": np.int32(stride),
    }


def generate_subject(
    params: SubjectParams, *, geometry: Geometry | None = None, rng: np.random.Generator | int | None = None
) -> PhantomSubject:
    """Generate one subject in memory.

    Parameters
    ----------
    params : from :func:`sample_subject_params` (or :func:`cmrkit.phantom.cohort.sample_cohort_params`).
    geometry : image geometry (default :class:`Geometry`, the UK Biobank-like demo geometry).
    rng : noise/texture generator; default ``SeedSequence(params.seed, spawn_key=(params.index, 1))``
        so that the subject is a function of ``(seed, index, geometry)`` only.
    """
    geometry = geometry or Geometry()
    if rng is None:
        rng = _rngs(params.seed, params.index)[1]
    elif not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    scene, realised, info = build_scene(params, geometry)
    heart = scene.heart
    cine, labels = render_cine(scene, geometry, rng)
    tagging = render_tagging(scene, geometry, rng)
    gt = _ground_truth(scene, geometry, info["landmark_theta0"])

    spacing = geometry.slice_spacing_mm
    curve = np.array(
        [heart.slice_volumes(scene.z_slices, heart.state(float(t)), spacing)["lv"] for t in scene.cine_times_ms]
    )
    rv_curve = np.array(
        [heart.slice_volumes(scene.z_slices, heart.state(float(t)), spacing)["rv"] for t in scene.cine_times_ms]
    )
    ed, es = 0, int(np.argmin(curve))
    vox_ml = geometry.pixel_mm**2 * spacing / 1000.0
    counts = np.stack([(labels == k).sum(axis=(0, 1, 2)) for k in (1, 2, 3)]).astype(float) * vox_ml
    lv_m, myo_m, rv_m = counts
    k_mid = scene.tag_slices[1]
    a_lv = float((labels[:, :, k_mid, ed] == 1).sum()) * geometry.pixel_mm**2
    a_epi = float(np.isin(labels[:, :, k_mid, ed], (1, 2)).sum()) * geometry.pixel_mm**2
    measured = {
        "lvedv_ml": lv_m[ed],
        "lvesv_ml": lv_m[es],
        "lvef_pct": 100.0 * (lv_m[ed] - lv_m[es]) / max(lv_m[ed], 1e-9),
        "lvm_g": myo_m[ed] * MYO_DENSITY,
        "rvedv_ml": rv_m[ed],
        "rvesv_ml": rv_m[es],
        "rvef_pct": 100.0 * (rv_m[ed] - rv_m[es]) / max(rv_m[ed], 1e-9),
        "wall_thickness_mm": math.sqrt(a_epi / math.pi) - math.sqrt(a_lv / math.pi),
        "peak_ecc": float(gt["ecc_landmark"][1].min()),
    }
    gt.update(
        {
            "lv_volume_target_ml": curve,
            "rv_volume_target_ml": rv_curve,
            "lv_volume_ml": lv_m,
            "myo_volume_ml": myo_m,
            "rv_volume_ml": rv_m,
            "cine_times_ms": scene.cine_times_ms.astype(float),
            "tag_times_ms": scene.tag_times_ms.astype(float),
            "tag_slice_index": np.asarray(scene.tag_slices, np.int32),
        }
    )
    cine_affine = scene.cine_grid.affine(scene.frame, float(scene.z_slices[0]), spacing)
    tag_affines = np.stack(
        [scene.tag_grid.affine(scene.frame, float(z), geometry.tag_slice_thickness_mm) for z in scene.tag_levels]
    )
    targets = dict(realised)
    targets["heart_rate_bpm"] = 60000.0 / info["rr_ms"]
    info.update(
        {
            "cine_grid_center": scene.cine_grid.center,
            "tag_grid_center": scene.tag_grid.center,
            "z_slices": scene.z_slices.tolist(),
            "lv_shape": asdict(heart.lv.shape),
            "lv_motion": asdict(heart.lv.motion),
            "rv_shape": asdict(heart.rv),
            "cycle": asdict(heart.cycle),
            "cmrkit_version": __version__,
        }
    )
    return PhantomSubject(
        params,
        geometry,
        cine,
        labels,
        cine_affine,
        tagging,
        tag_affines,
        ed,
        es,
        scene.cine_times_ms,
        scene.tag_times_ms,
        tuple(int(k) for k in scene.tag_slices),
        gt,
        targets,
        measured,
        info,
    )
