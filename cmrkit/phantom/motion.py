"""Analytic, periodic LV motion with exact strain, a Wiggers-like cycle and regional dysfunction.

Coordinates
-----------
The *LV frame* has its in-plane axes ``(x, y)`` along the cine image axes (mm) and its level
``Z`` along the long axis, from the epicardial apex (``Z = 0``) to the base plane (``Z = L``),
at end-diastole (ED). Polar material coordinates are ``(R, Theta, Z)`` at ED, current ones
``(r, theta, z)``. Short-axis slices are planes of constant ``z``.

Motion model (all components scale with one normalised deformation ``w(t)``, 0 at ED, 1 at ES)
----------------------------------------------------------------------------------------------
* longitudinal shortening, apex fixed: ``z = q(t) Z`` with ``q = 1 - s_long w``;
* endocardial area change at each level: ``r_en^2 = R_en0^2 (1 - alpha(t) m(Theta, Z))`` where
  ``m`` is the regional motion factor (1 normal, 0 akinetic) and ``alpha`` is set so that the
  cavity volume ratio of normal tissue is ``v(t) = 1 - (1 - v_es) w`` (``alpha = 1 - v / q``);
* incompressible myocardium: ``rho^2 = r_en^2 + (R^2 - R_en0^2) / q`` for ``R >= R_en0``
  (each material annulus keeps its volume as it shortens by ``q``);
* blood pool: ``rho = r_en (R / R_en0)^p`` with ``p = R_en0^2 / (q r_en^2)``, the C1 continuation of
  the wall map (so the in-plane map and its strain are continuous across the endocardium);
* twist: ``theta = Theta + phi``, ``phi = w [phi_base Z/L + phi_apex (1 - Z/L)] (1 + tau (1 - xi))``
  with transmural coordinate ``xi = (R - R_en0) / (R_ep0 - R_en0)`` (0 endocardium, 1 epicardium):
  the endocardium turns ``1 + tau`` times as far as the epicardium; base and apex turn in
  opposite directions (after the analytic LV of PyMRStrain, github.com/hmella/pymrstrain).

Deformation gradient in polar bases (rows current radial / circumferential, columns material
radial / circumferential)::

    F = [[rho_R,         rho_Theta / R ],
         [rho * phi_R,   rho / R       ]]          (phi does not depend on Theta)

so the Green strain ``E = (F^T F - I) / 2`` has, exactly,
``E_rr = (rho_R^2 + (rho phi_R)^2 - 1) / 2``, ``E_cc = ((rho_Theta / R)^2 + (rho / R)^2 - 1) / 2``
and ``E_rc = (rho_R rho_Theta / R + rho^2 phi_R / R) / 2`` (for a regionally uniform heart
``rho_Theta = 0`` and ``E_cc = ((rho/R)^2 - 1)/2``).

Tagging sees the *apparent* in-plane motion of the imaging plane: the material in plane ``z`` at
time ``t`` comes from level ``Z_t = z / q(t)``, and the in-plane map at that level is the one above.
Ground-truth landmarks and strains use exactly this map, so tag lines stay on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CardiacCycle",
    "cardiac_cycle",
    "RegionalFunction",
    "AHA_SEGMENTS",
    "LVShape",
    "LVMotion",
    "LVState",
    "LVModel",
    "superellipse_profile",
]

#: AHA 16-segment names (Cerqueira et al. 2002; segment 17, the apex cap, has no cavity here)
AHA_SEGMENTS = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
}


# ----------------------------------------------------------------------------------------------
# cardiac cycle
# ----------------------------------------------------------------------------------------------
def _ease_early(s: np.ndarray, gamma: float = 0.75) -> np.ndarray:
    """0 -> 1 with zero slope at both ends, faster early: ``(1 - cos(pi s^gamma)) / 2``."""
    s = np.clip(s, 0.0, 1.0)
    return 0.5 * (1.0 - np.cos(np.pi * s**gamma))


def _smoothstep(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


@dataclass(frozen=True)
class CardiacCycle:
    """Wiggers-like LV volume time course over one R-R interval (t = 0 at the R wave = ED).

    Phases: isovolumic contraction (``ivc_ms``), ejection (``ejection_ms``, ends at ES),
    isovolumic relaxation (``ivr_ms``), rapid filling (``rapid_ms``, refills ``frac_rapid`` of the
    stroke volume), diastasis (``frac_diastasis``) and the atrial kick (``atrial_ms``, the rest)
    ending at the next ED. :meth:`w` is the normalised deformation ``(EDV - V(t)) / SV``.
    """

    rr_ms: float
    ivc_ms: float
    ejection_ms: float
    ivr_ms: float
    rapid_ms: float
    atrial_ms: float
    frac_rapid: float
    frac_diastasis: float

    @property
    def t_es_ms(self) -> float:
        """End of ejection (end-systole)."""
        return self.ivc_ms + self.ejection_ms

    @property
    def heart_rate_bpm(self) -> float:
        return 60000.0 / self.rr_ms

    def w(self, t_ms: float | np.ndarray) -> np.ndarray:
        """Normalised deformation at time ``t_ms`` (periodic with ``rr_ms``): 0 at ED, 1 at ES."""
        t = np.mod(np.asarray(t_ms, dtype=float), self.rr_ms)
        t_es = self.t_es_ms
        t1 = t_es + self.ivr_ms
        t2 = t1 + self.rapid_ms
        t3 = self.rr_ms - self.atrial_ms
        fr, fd = self.frac_rapid, self.frac_diastasis
        fa = 1.0 - fr - fd
        out = np.zeros_like(t)
        m = (t >= self.ivc_ms) & (t < t_es)
        out[m] = _ease_early((t[m] - self.ivc_ms) / self.ejection_ms)
        out[(t >= t_es) & (t < t1)] = 1.0
        m = (t >= t1) & (t < t2)
        out[m] = 1.0 - fr * _ease_early((t[m] - t1) / self.rapid_ms)
        m = (t >= t2) & (t < t3)
        out[m] = 1.0 - fr - fd * _smoothstep((t[m] - t2) / max(t3 - t2, 1e-6))
        m = t >= t3
        out[m] = fa * (1.0 - _smoothstep((t[m] - t3) / self.atrial_ms))
        return out


def cardiac_cycle(heart_rate_bpm: float, *, sex: int, age: float) -> CardiacCycle:
    """Phase durations for a heart rate, sex and age.

    Ejection time from Weissler et al. 1968 (LVET = 413 - 1.7 HR ms in men, 418 - 1.6 HR in women);
    isovolumic contraction 45 ms and relaxation 75 ms, rapid filling ~170 ms at 60 bpm (scaled with
    sqrt(RR)), atrial kick 110 ms (typical textbook values; assumption). The share of filling in
    the rapid phase falls with age (E/A ratio decline): ``0.72 - 0.006 (age - 50)`` clipped to
    [0.45, 0.8]; diastasis refills 6 %. When diastole is too short the filling phases are compressed.
    """
    if not (30.0 <= heart_rate_bpm <= 200.0):
        raise ValueError(f"heart_rate_bpm must be in [30, 200], got {heart_rate_bpm}")
    rr = 60000.0 / heart_rate_bpm
    ej = (413.0 - 1.7 * heart_rate_bpm) if sex else (418.0 - 1.6 * heart_rate_bpm)
    ivc, ivr = 45.0, 75.0
    rapid = 170.0 * math.sqrt(rr / 1000.0)
    atrial = 110.0
    avail = rr - ivc - ej - ivr
    min_diastasis = 30.0
    if avail < rapid + atrial + min_diastasis:
        scale = max(avail - min_diastasis, 60.0) / (rapid + atrial)
        rapid, atrial = rapid * scale, atrial * scale
    frac_rapid = float(np.clip(0.72 - 0.006 * (age - 50.0), 0.45, 0.8))
    return CardiacCycle(rr, ivc, ej, ivr, rapid, atrial, frac_rapid, 0.06)


# ----------------------------------------------------------------------------------------------
# regional function (AHA segments)
# ----------------------------------------------------------------------------------------------
def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class RegionalFunction:
    """Smooth regional motion factor ``m(Theta, Z)`` over AHA segments 1-16.

    ``m = 1 - sum_s (1 - f_s) W_s(Theta) V_s(Z)`` with ``W``, ``V`` smooth boxes (tanh edges of
    ``edge_deg`` / ``edge_mm``) forming a partition of unity, so ``m`` is 1 in normal segments, ``f_s``
    inside an affected one and smooth in between (exact strain needs its derivative).

    Segment layout (Cerqueira et al. 2002): the septum is centred at ``theta_septum`` (between
    segments 2|3, 8|9 and on 14); ``sense`` is +1 when the anterior wall lies counter-clockwise
    of the septum in the LV frame. Levels are thirds of the cavity length ``[z_apex_en, z_base]``.
    """

    factors: Mapping[int, float] = field(default_factory=dict)
    theta_septum: float = 0.0
    sense: float = 1.0
    z_apex_en: float = 0.0
    z_base: float = 1.0
    edge_deg: float = 8.0
    edge_mm: float = 4.0

    @property
    def active(self) -> bool:
        return any(abs(f - 1.0) > 1e-12 for f in self.factors.values())

    def _segment_geometry(self, seg: int) -> tuple[float, float, int]:
        s, th = self.sense, self.theta_septum
        if 1 <= seg <= 12:
            k = (seg - 1) % 6
            offs = [90.0, 30.0, -30.0, -90.0, -150.0, 150.0][k]
            level = 0 if seg <= 6 else 1
            return th + s * math.radians(offs), math.radians(30.0), level
        if 13 <= seg <= 16:
            offs = [90.0, 0.0, -90.0, 180.0][seg - 13]
            return th + s * math.radians(offs), math.radians(45.0), 2
        raise ValueError(f"AHA segment must be 1..16, got {seg}")

    def _level_window(self, Z: np.ndarray, level: int) -> np.ndarray:
        c = self.z_base - self.z_apex_en
        b1 = self.z_base - c / 3.0
        b2 = self.z_base - 2.0 * c / 3.0
        e = self.edge_mm
        up = 0.5 * (1.0 + np.tanh((Z - b1) / e))  # 1 in the basal third
        lo = 0.5 * (1.0 + np.tanh((b2 - Z) / e))  # 1 in the apical third
        if level == 0:
            return up
        if level == 2:
            return lo
        return 1.0 - up - lo

    def m_and_derivative(
        self, Theta: np.ndarray, Z: np.ndarray, derivative: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``m(Theta, Z)`` and ``dm/dTheta`` (arrays broadcast together; None when not asked)."""
        Theta = np.asarray(Theta)
        Z = np.asarray(Z)
        shape = np.broadcast_shapes(Theta.shape, Z.shape)
        dtype = np.result_type(Theta.dtype, Z.dtype, np.float32)
        m = np.ones(shape, dtype)
        dm = np.zeros(shape, dtype) if derivative else None
        e = math.radians(self.edge_deg)
        levels: dict[int, np.ndarray] = {}
        for seg, f in self.factors.items():
            if abs(f - 1.0) < 1e-12:
                continue
            c, hw, level = self._segment_geometry(int(seg))
            if level not in levels:
                levels[level] = self._level_window(Z, level)
            lv = levels[level]
            d = Theta - c
            d = d - (2.0 * np.pi) * np.round(d * (0.5 / np.pi))  # wrap to [-pi, pi]
            u = (hw - np.abs(d)) * (1.0 / e)
            th = np.tanh(u)
            m = m - (1.0 - f) * 0.5 * (1.0 + th) * lv
            if derivative:
                dm = dm - (1.0 - f) * (-0.5 / e) * (1.0 - th * th) * np.sign(d) * lv
        return m, dm

    def m(self, Theta: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return self.m_and_derivative(Theta, Z, derivative=False)[0]

    def segment_of(self, Theta: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """AHA segment number (1-16) of material points (hard assignment, for reporting)."""
        Theta = np.asarray(Theta, float)
        Z = np.asarray(Z, float)
        c = self.z_base - self.z_apex_en
        level = np.where(Z >= self.z_base - c / 3.0, 0, np.where(Z >= self.z_base - 2 * c / 3.0, 1, 2))
        rel = _wrap((Theta - self.theta_septum) * self.sense)  # 0 at septum, +90 anterior
        deg = np.degrees(rel)
        six = np.select(
            [
                (deg >= 60) & (deg < 120),
                (deg >= 0) & (deg < 60),
                (deg >= -60) & (deg < 0),
                (deg >= -120) & (deg < -60),
                (deg >= -180) & (deg < -120),
            ],
            [1, 2, 3, 4, 5],
            6,
        )
        four = np.select(
            [(deg >= 45) & (deg < 135), (deg >= -45) & (deg < 45), (deg >= -135) & (deg < -45)], [13, 14, 15], 16
        )
        return np.where(level == 0, six, np.where(level == 1, six + 6, four))


# ----------------------------------------------------------------------------------------------
# LV shape and kinematics
# ----------------------------------------------------------------------------------------------
def superellipse_profile(u: np.ndarray, beta: float) -> np.ndarray:
    """``(1 - u^beta)^(1/beta)`` for ``u`` in [0, 1], 0 for ``u > 1``, 1 for ``u < 0``.

    ``beta = 2`` is an ellipse (a prolate half-ellipsoid LV); larger ``beta`` is fuller (more
    cylindrical). ``u`` is the distance below the base divided by the long semi-axis.
    """
    u = np.clip(u, 0.0, 1.0)
    return np.power(np.maximum(1.0 - np.power(u, beta), 0.0), 1.0 / beta)


@dataclass(frozen=True)
class LVShape:
    """ED geometry: truncated superellipsoids of revolution, base plane at ``Z = length``.

    Epicardium: radius ``a_ep S((L - Z) / L)`` (apex at ``Z = 0``); endocardium:
    ``a_en S((L - Z) / c_en)`` (cavity apex at ``Z = L - c_en``, apical wall ``L - c_en`` thick).
    """

    length: float
    a_en: float
    a_ep: float
    c_en: float
    beta: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.a_en < self.a_ep and 0 < self.c_en < self.length):
            raise ValueError(f"invalid LV shape {self}: need 0 < a_en < a_ep and 0 < c_en < length")

    @property
    def z_apex_en(self) -> float:
        return self.length - self.c_en

    def radii(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(R_en0, R_ep0)`` at levels ``Z`` (0 outside the LV's extent below the base)."""
        Z = np.asarray(Z)
        L = self.length
        r_ep = self.a_ep * superellipse_profile((L - Z) / L, self.beta)
        r_en = self.a_en * superellipse_profile((L - Z) / self.c_en, self.beta)
        r_ep = np.where(Z >= 0, r_ep, 0.0)
        return r_en.astype(Z.dtype if Z.dtype.kind == "f" else float), r_ep.astype(
            Z.dtype if Z.dtype.kind == "f" else float
        )


@dataclass(frozen=True)
class LVMotion:
    """Motion amplitudes at end-systole (see module docstring).

    ``twist_apex`` / ``twist_base`` are in-plane rotations (radians, LV-frame angle convention) of
    the epicardium at the apex / base level; ``twist_transmural`` is ``tau``.
    """

    s_long: float
    v_es: float
    twist_apex: float
    twist_base: float
    twist_transmural: float = 0.3


@dataclass(frozen=True)
class LVState:
    """Deformation state at one time: ``w`` (0 ED .. 1 ES), ``q = 1 - s_long w``, ``alpha``."""

    t_ms: float
    w: float
    q: float
    alpha: float


class LVModel:
    """Closed-form LV kinematics: forward/inverse in-plane maps, boundaries and exact strain."""

    def __init__(
        self, shape: LVShape, motion: LVMotion, cycle: CardiacCycle, regional: RegionalFunction | None = None
    ) -> None:
        self.shape = shape
        self.motion = motion
        self.cycle = cycle
        self.regional = regional if (regional is not None and regional.active) else None

    # -- state ------------------------------------------------------------------------------
    def state(self, t_ms: float) -> LVState:
        w = float(self.cycle.w(t_ms))
        return self.state_from_w(w, t_ms)

    def state_from_w(self, w: float, t_ms: float = float("nan")) -> LVState:
        q = 1.0 - self.motion.s_long * w
        v = 1.0 - (1.0 - self.motion.v_es) * w
        alpha = 1.0 - v / q
        return LVState(t_ms, w, q, alpha)

    def level(self, z: np.ndarray | float, st: LVState) -> np.ndarray:
        """Material level ``Z_t = z / q(t)`` of the material now in plane ``z``."""
        return np.asarray(z) / st.q

    def present(self, Z: np.ndarray) -> np.ndarray:
        """True where level ``Z`` lies inside the LV (between apex and base plane)."""
        return (Z >= 0.0) & (Z <= self.shape.length)

    # -- helpers ----------------------------------------------------------------------------
    def _m(self, Theta: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.regional is None:
            z = np.zeros(np.broadcast_shapes(np.shape(Theta), np.shape(Z)))
            return z + 1.0, z
        return self.regional.m_and_derivative(Theta, Z)

    def twist_level(self, Z: np.ndarray, st: LVState) -> np.ndarray:
        """Epicardial twist angle at level ``Z`` (radians)."""
        L = self.shape.length
        zr = np.clip(np.asarray(Z) / L, 0.0, 1.0)
        return st.w * (self.motion.twist_base * zr + self.motion.twist_apex * (1.0 - zr))

    def _xi_wall(self, R: np.ndarray, R_en0: np.ndarray, R_ep0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wall = np.maximum(R_ep0 - R_en0, 1e-3)
        return (R - R_en0) / wall, wall

    def twist(
        self,
        R: np.ndarray,
        Z: np.ndarray,
        st: LVState,
        R_en0: np.ndarray | None = None,
        R_ep0: np.ndarray | None = None,
    ) -> np.ndarray:
        """Twist ``phi(R, Z, t)`` (radians)."""
        if R_en0 is None or R_ep0 is None:
            R_en0, R_ep0 = self.shape.radii(Z)
        xi, _ = self._xi_wall(R, R_en0, R_ep0)
        return self.twist_level(Z, st) * (1.0 + self.motion.twist_transmural * (1.0 - xi))

    # -- boundaries ---------------------------------------------------------------------------
    def boundaries(self, theta: np.ndarray, Z: np.ndarray, st: LVState) -> tuple[np.ndarray, np.ndarray]:
        """Current endocardial and epicardial radii along current angle ``theta`` at level ``Z``."""
        R_en0, R_ep0 = self.shape.radii(Z)
        tw = self.twist_level(Z, st)
        tau = self.motion.twist_transmural
        if self.regional is None:
            m_en = m_ep = 1.0
        else:
            m_en = self.regional.m(theta - tw * (1.0 + tau), Z)
            m_ep = self.regional.m(theta - tw, Z)
        r_en2 = R_en0**2 * (1.0 - st.alpha * m_en)
        r_ep2 = R_en0**2 * (1.0 - st.alpha * m_ep) + (R_ep0**2 - R_en0**2) / st.q
        return np.sqrt(np.maximum(r_en2, 0.0)), np.sqrt(np.maximum(r_ep2, 0.0))

    def cavity_area(self, Z: np.ndarray, st: LVState, n_theta: int = 360) -> np.ndarray:
        """Exact cavity cross-section (mm^2) at levels ``Z``: ``pi R_en0^2 (1 - alpha mean_Theta m)``."""
        Z = np.atleast_1d(np.asarray(Z, float))
        R_en0, _ = self.shape.radii(Z)
        if self.regional is None:
            mbar = np.ones_like(Z)
        else:
            th = np.linspace(-np.pi, np.pi, n_theta, endpoint=False)
            mbar = self.regional.m(th[None, :], Z[:, None]).mean(axis=1)
        area = np.pi * R_en0**2 * (1.0 - st.alpha * mbar)
        return np.where(self.present(Z), area, 0.0)

    def myo_area(self, Z: np.ndarray, st: LVState) -> np.ndarray:
        """Exact wall cross-section (mm^2) at levels ``Z``: ``pi (R_ep0^2 - R_en0^2) / q``."""
        Z = np.atleast_1d(np.asarray(Z, float))
        R_en0, R_ep0 = self.shape.radii(Z)
        return np.where(self.present(Z), np.pi * (R_ep0**2 - R_en0**2) / st.q, 0.0)

    # -- maps ------------------------------------------------------------------------------------
    def forward_polar(
        self, R: np.ndarray, Theta: np.ndarray, Z: np.ndarray, st: LVState
    ) -> tuple[np.ndarray, np.ndarray]:
        """In-plane map at level ``Z``: material ``(R, Theta)`` -> current ``(rho, theta)``.

        Valid for ``R <= R_ep0(Z)`` (blood pool and wall); ``Z`` is the material level.
        """
        R, Theta, Z = np.broadcast_arrays(np.asarray(R, float), np.asarray(Theta, float), np.asarray(Z, float))
        R_en0, R_ep0 = self.shape.radii(Z)
        m, _ = self._m(Theta, Z)
        r_en2 = R_en0**2 * (1.0 - st.alpha * m)
        q = st.q
        rho_myo = np.sqrt(np.maximum(r_en2 + (R**2 - R_en0**2) / q, 0.0))
        blood = R < R_en0
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(r_en2 > 0, R_en0**2 / (q * np.maximum(r_en2, 1e-12)), 1.0)
            rho_bl = np.sqrt(r_en2) * np.power(np.where(R_en0 > 0, R / np.maximum(R_en0, 1e-12), 0.0), p)
        rho = np.where(blood, rho_bl, rho_myo)
        theta = Theta + self.twist(R, Z, st, R_en0, R_ep0)
        return rho, theta

    def inverse_polar(
        self, r: np.ndarray, theta: np.ndarray, Z: np.ndarray, st: LVState, n_iter: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Current ``(r, theta)`` at material level ``Z`` -> material ``(R, Theta)`` and ``inside``.

        Exact in one step for a regionally uniform heart (``r_en`` does not depend on ``Theta``);
        otherwise ``n_iter`` fixed-point sweeps on ``Theta`` (default 4). ``inside`` is True where
        the point lies within the current epicardium (where the map is defined).
        """
        r = np.asarray(r)
        theta = np.asarray(theta)
        Z = np.asarray(Z)
        R_en0, R_ep0 = self.shape.radii(Z)
        q, alpha = st.q, st.alpha
        tw = self.twist_level(Z, st)
        tau = self.motion.twist_transmural
        Theta = theta - tw * (1.0 + 0.5 * tau)
        iters = 1 if self.regional is None else (4 if n_iter is None else n_iter)
        wall = np.maximum(R_ep0 - R_en0, 1e-3)
        for _ in range(iters):
            if self.regional is None:
                r_en2 = R_en0**2 * (1.0 - alpha)
            else:
                r_en2 = R_en0**2 * (1.0 - alpha * self.regional.m(Theta, Z))
            r_en = np.sqrt(np.maximum(r_en2, 0.0))
            R_myo = np.sqrt(np.maximum(R_en0**2 + q * (r * r - r_en2), 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                p = R_en0**2 / (q * np.maximum(r_en2, 1e-12))
                R_bl = R_en0 * np.power(np.minimum(r / np.maximum(r_en, 1e-12), 1.0), 1.0 / np.maximum(p, 1e-6))
            R = np.where(r < r_en, R_bl, R_myo)
            xi = (R - R_en0) / wall
            Theta = theta - tw * (1.0 + tau * (1.0 - xi))
        r_ep2 = r_en2 + (R_ep0**2 - R_en0**2) / q
        inside = r * r <= r_ep2
        return R, Theta, inside

    def forward_xy(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, st: LVState) -> tuple[np.ndarray, np.ndarray]:
        """Cartesian version of :meth:`forward_polar` (material ``X, Y`` at ED, level ``Z``)."""
        R = np.hypot(X, Y)
        Th = np.arctan2(Y, X)
        rho, th = self.forward_polar(R, Th, Z, st)
        return rho * np.cos(th), rho * np.sin(th)

    # -- exact strain -----------------------------------------------------------------------------
    def deformation_gradient_polar(
        self, R: np.ndarray, Theta: np.ndarray, Z: np.ndarray, st: LVState
    ) -> dict[str, np.ndarray]:
        """Closed-form ``F`` in polar bases at material points (see module docstring).

        Returns ``F_rR, F_rT, F_tR, F_tT`` (current radial/circumferential rows, material
        radial/circumferential columns) plus ``rho``, ``theta``.
        """
        R, Theta, Z = np.broadcast_arrays(np.asarray(R, float), np.asarray(Theta, float), np.asarray(Z, float))
        R_en0, R_ep0 = self.shape.radii(Z)
        m, m_T = self._m(Theta, Z)
        q, alpha = st.q, st.alpha
        r_en2 = R_en0**2 * (1.0 - alpha * m)
        d_ren2 = -(R_en0**2) * alpha * m_T  # d(r_en^2)/dTheta
        blood = R < R_en0
        rho_m = np.sqrt(np.maximum(r_en2 + (R**2 - R_en0**2) / q, 1e-30))
        rhoR_m = R / (q * rho_m)
        rhoT_m = d_ren2 / (2.0 * rho_m)
        with np.errstate(divide="ignore", invalid="ignore"):
            r_en2s = np.maximum(r_en2, 1e-12)
            p = R_en0**2 / (q * r_en2s)
            ratio = np.where(R_en0 > 0, R / np.maximum(R_en0, 1e-12), 1.0)
            rho_b = np.sqrt(r_en2s) * np.power(ratio, p)
            rhoR_b = p * rho_b / np.maximum(R, 1e-12)
            p_T = -(R_en0**2) * d_ren2 / (q * r_en2s**2)
            rhoT_b = rho_b * (d_ren2 / (2.0 * r_en2s) + p_T * np.log(np.maximum(ratio, 1e-30)))
        rho = np.where(blood, rho_b, rho_m)
        rho_R = np.where(blood, rhoR_b, rhoR_m)
        rho_T = np.where(blood, rhoT_b, rhoT_m)
        xi, wall = self._xi_wall(R, R_en0, R_ep0)
        tw = self.twist_level(Z, st)
        tau = self.motion.twist_transmural
        phi = tw * (1.0 + tau * (1.0 - xi))
        phi_R = -tw * tau / wall
        return {
            "F_rR": rho_R,
            "F_rT": rho_T / R,
            "F_tR": rho * phi_R,
            "F_tT": rho / R,
            "rho": rho,
            "theta": Theta + phi,
        }

    def green_strain_polar(
        self, R: np.ndarray, Theta: np.ndarray, Z: np.ndarray, st: LVState
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact Green strain ``(E_rr, E_cc, E_rc)`` in the material radial/circumferential basis."""
        F = self.deformation_gradient_polar(R, Theta, Z, st)
        e_rr = 0.5 * (F["F_rR"] ** 2 + F["F_tR"] ** 2 - 1.0)
        e_cc = 0.5 * (F["F_rT"] ** 2 + F["F_tT"] ** 2 - 1.0)
        e_rc = 0.5 * (F["F_rR"] * F["F_rT"] + F["F_tR"] * F["F_tT"])
        return e_rr, e_cc, e_rc

    def deformation_gradient_xy(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, st: LVState) -> np.ndarray:
        """Cartesian ``F = Q(theta) F_polar Q(Theta)^T`` with shape ``(..., 2, 2)``."""
        R = np.hypot(X, Y)
        Th = np.arctan2(Y, X)
        F = self.deformation_gradient_polar(R, Th, Z, st)
        P = np.stack([np.stack([F["F_rR"], F["F_rT"]], -1), np.stack([F["F_tR"], F["F_tT"]], -1)], -2)
        th = F["theta"]

        def rot(a: np.ndarray) -> np.ndarray:
            c, s = np.cos(a), np.sin(a)
            return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)

        return rot(th) @ P @ np.swapaxes(rot(Th), -1, -2)
