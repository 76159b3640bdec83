"""The smooth wall-displacement model shared by the HARP and learned trackers.

:class:`WallModel` writes a displacement field over the frame-0 LV wall as circumferential Fourier
harmonics times Legendre polynomials across the wall; :func:`robust_fit` fits it (Huber-reweighted,
ridge-regularised least squares) to point displacements; :func:`wall_pixels` lists the frame-0 wall
pixels between the endocardial and epicardial landmark rings.
"""

from __future__ import annotations

import numpy as np

from ..strain import N_RINGS, N_SPOKES
from .harp import TWO_PI

__all__ = ["WallModel", "robust_fit", "wall_pixels"]


class WallModel:
    """Smooth displacement model ``u(X)`` over the frame-0 wall.

    ``X`` is written in wall coordinates about the frame-0 endocardial centroid: angle ``theta`` and
    transmural fraction ``rt = (r - r_endo(theta)) / (r_epi(theta) - r_endo(theta))`` (the endo/epi
    radii interpolated periodically between the 24 spokes). Each displacement component is
    ``sum_m sum_p c_mp T_m(theta) L_p(2 rt - 1)`` with ``T_m`` = 1, cos/sin(m theta) up to order
    ``n_angular`` and Legendre polynomials ``L_p`` up to ``degree`` (``rt`` clipped to
    [-0.4, 1.4] so the model stays bounded off the wall).
    """

    def __init__(self, x0: np.ndarray, n_angular: int, degree: int) -> None:
        g = x0.reshape(2, N_SPOKES, N_RINGS)
        self.center = g[:, :, 0].mean(1)
        self.n_angular, self.degree = int(n_angular), int(degree)
        self.tables = []
        for ring in (g[:, :, 0], g[:, :, -1]):
            th, r = self._polar(ring)
            o = np.argsort(th)
            th, r = th[o], r[o]
            self.tables.append(
                (np.concatenate([th[-1:] - TWO_PI, th, th[:1] + TWO_PI]), np.concatenate([r[-1:], r, r[:1]]))
            )
        self.n_basis = (2 * self.n_angular + 1) * (self.degree + 1)
        m = np.repeat(np.r_[0, np.repeat(np.arange(1, self.n_angular + 1), 2)], self.degree + 1)
        p = np.tile(np.arange(self.degree + 1), 2 * self.n_angular + 1)
        #: ridge weights growing with circumferential order and transmural degree
        self.penalty = 1e-3 * ((1.0 + m**2) * (1.0 + p**2) - 1.0)
        #: for fits to band-pass HARP displacements, whose transmural profile is smoothed and biased
        #: near the wall boundaries: transmural terms above linear are switched off (stable
        #: extrapolation to the endo- and epicardial rings)
        self.penalty_linear = self.penalty + 1e3 * (p >= 2)

    def _polar(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = p - self.center[:, None]
        return np.arctan2(d[1], d[0]), np.hypot(d[0], d[1])

    def coords(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th, r = self._polar(X)
        r_en = np.interp(th, *self.tables[0])
        r_ep = np.interp(th, *self.tables[1])
        return th, (r - r_en) / np.maximum(r_ep - r_en, 1e-6)

    def basis(self, X: np.ndarray) -> np.ndarray:
        th, rt = self.coords(X)
        u = 2 * np.clip(rt, -0.4, 1.4) - 1
        if self.degree > 4:
            raise ValueError("transmural degree must be <= 4")
        leg = np.empty((len(u), self.degree + 1))
        leg[:, 0] = 1.0
        if self.degree >= 1:
            leg[:, 1] = u
        for p in range(2, self.degree + 1):  # Bonnet recursion
            leg[:, p] = ((2 * p - 1) * u * leg[:, p - 1] - (p - 1) * leg[:, p - 2]) / p
        ang = np.empty((len(th), 2 * self.n_angular + 1))
        ang[:, 0] = 1.0
        e1 = np.exp(1j * th)
        em = np.ones_like(e1)
        for m in range(1, self.n_angular + 1):
            em = em * e1
            ang[:, 2 * m - 1], ang[:, 2 * m] = em.real, em.imag
        return (ang[:, :, None] * leg[:, None, :]).reshape(len(th), -1)

    def u(self, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
        return (self.basis(X) @ coef).T

    def inverse(self, y: np.ndarray, coef: np.ndarray, n: int = 10) -> np.ndarray:
        """Material points ``X`` with ``X + u(X) = y`` (fixed-point iteration)."""
        X = y - self.u(y, coef)
        for _ in range(n - 1):
            X = y - self.u(X, coef)
        return X

    def dX_dx(self, X: np.ndarray, coef: np.ndarray, e: float = 0.25) -> np.ndarray:
        """Jacobian of the inverse map at the current positions of material points ``X``, ``(N, 2, 2)``."""
        ex, ey = np.array([[e], [0.0]]), np.array([[0.0], [e]])
        du = np.stack(
            [
                (self.u(X + ex, coef) - self.u(X - ex, coef)) / (2 * e),
                (self.u(X + ey, coef) - self.u(X - ey, coef)) / (2 * e),
            ],
            -1,
        )  # (2, N, 2)
        F = np.eye(2)[None] + np.moveaxis(du, 1, 0)
        return np.linalg.inv(F)


def robust_fit(
    a: np.ndarray, u: np.ndarray, w: np.ndarray, scale: float, penalty: np.ndarray | None = None, n_iter: int = 4
) -> np.ndarray:
    """Weighted, ridge-regularised least squares of ``u (N, 2)`` on ``a (N, B)`` with Huber
    reweighting (residual ``scale`` in pixels). ``penalty (B,)`` multiplies ``trace(A^T W A) / B``."""
    wr = np.ones(len(u))
    coef = np.zeros((a.shape[1], 2))
    for _ in range(n_iter):
        ww = w * wr
        aw = a * ww[:, None]
        m = aw.T @ a
        if penalty is not None:
            m = m + np.diag(penalty * (np.trace(m) / a.shape[1]))
        coef = np.linalg.solve(m + 1e-9 * np.eye(a.shape[1]), aw.T @ u)
        r = np.sqrt(((a @ coef - u) ** 2).sum(1))
        wr = np.minimum(1.0, scale / np.maximum(r, 1e-12))
    return coef


def wall_pixels(x0: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres ``(2, M)`` inside the frame-0 wall (between rings 0 and 6)."""
    from skimage.draw import polygon2mask

    g = x0.reshape(2, N_SPOKES, N_RINGS)
    outer = polygon2mask(shape, np.stack([g[1, :, -1], g[0, :, -1]], 1))
    inner = polygon2mask(shape, np.stack([g[1, :, 0], g[0, :, 0]], 1))
    ys, xs = np.nonzero(outer & ~inner)
    return np.stack([xs, ys]).astype(float)
