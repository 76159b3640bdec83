"""Analytic motion: cycle, maps, exact deformation gradient, incompressibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrkit.phantom.motion import LVModel, LVMotion, LVShape, RegionalFunction, cardiac_cycle

SHAPE = LVShape(length=90.0, a_en=27.0, a_ep=34.0, c_en=85.0, beta=2.3)
MOTION = LVMotion(
    s_long=0.15, v_es=0.40, twist_apex=math.radians(-10), twist_base=math.radians(4), twist_transmural=0.3
)
REGIONAL = RegionalFunction({7: 0.0, 8: 0.3, 13: 0.5}, theta_septum=2.8, sense=1.0, z_apex_en=5.0, z_base=90.0)


@pytest.fixture(params=[None, REGIONAL], ids=["normal", "regional"])
def model(request):
    return LVModel(SHAPE, MOTION, cardiac_cycle(65, sex=1, age=60), request.param)


def test_cycle_phases():
    cyc = cardiac_cycle(60, sex=1, age=55)
    assert cyc.ejection_ms == pytest.approx(413 - 1.7 * 60)  # Weissler 1968
    t = np.linspace(0, cyc.rr_ms, 2001)
    w = cyc.w(t)
    assert w[0] == 0 and np.all((w >= 0) & (w <= 1))
    assert np.all(w[t < cyc.ivc_ms] == 0)  # isovolumic contraction
    ivr = (t >= cyc.t_es_ms) & (t < cyc.t_es_ms + cyc.ivr_ms)
    assert np.all(w[ivr] == 1)  # isovolumic relaxation at ES
    ej = (t >= cyc.ivc_ms) & (t < cyc.t_es_ms)
    assert np.all(np.diff(w[ej]) >= 0)  # ejection monotone
    fill = t >= cyc.t_es_ms + cyc.ivr_ms
    assert np.all(np.diff(w[fill]) <= 1e-12)  # filling monotone
    assert cyc.w(cyc.rr_ms + 100.0) == pytest.approx(cyc.w(100.0))  # periodic
    # rapid filling then atrial kick: the share of SV refilled before the atrial phase
    before_a = cyc.w(cyc.rr_ms - cyc.atrial_ms)
    assert before_a == pytest.approx(1 - cyc.frac_rapid - cyc.frac_diastasis)


def test_fast_heart_rate_compresses_diastole():
    cyc = cardiac_cycle(110, sex=0, age=70)
    total = cyc.ivc_ms + cyc.ejection_ms + cyc.ivr_ms + cyc.rapid_ms + cyc.atrial_ms
    assert total < cyc.rr_ms
    with pytest.raises(ValueError):
        cardiac_cycle(10, sex=0, age=50)


def _points(rng, Z):
    R_en, R_ep = SHAPE.radii(np.asarray(Z))
    R = rng.uniform(2.0, float(R_ep), 500)
    T = rng.uniform(-np.pi, np.pi, 500)
    return R * np.cos(T), R * np.sin(T)


def test_deformation_gradient_matches_finite_differences(model):
    rng = np.random.default_rng(0)
    st = model.state(model.cycle.t_es_ms)
    for Z in (30.0, 55.0, 80.0):
        X, Y = _points(rng, Z)
        F = model.deformation_gradient_xy(X, Y, np.full_like(X, Z), st)
        h = 1e-5
        dx = (np.stack(model.forward_xy(X + h, Y, Z, st)) - np.stack(model.forward_xy(X - h, Y, Z, st))) / (2 * h)
        dy = (np.stack(model.forward_xy(X, Y + h, Z, st)) - np.stack(model.forward_xy(X, Y - h, Z, st))) / (2 * h)
        Ffd = np.stack([dx, dy], -1).transpose(1, 0, 2)
        assert np.abs(F - Ffd).max() < 1e-6


def test_inverse_is_the_inverse_of_forward(model):
    rng = np.random.default_rng(1)
    st = model.state(0.6 * model.cycle.t_es_ms)
    Z = 50.0
    X, Y = _points(rng, Z)
    R, T = np.hypot(X, Y), np.arctan2(Y, X)
    rho, th = model.forward_polar(R, T, np.full_like(R, Z), st)
    R2, T2, inside = model.inverse_polar(rho, th, np.full_like(R, Z), st, n_iter=10)
    assert inside.all()
    assert np.abs(R2 - R).max() < 1e-6
    assert np.abs(np.angle(np.exp(1j * (T2 - T)))).max() < 1e-6


def test_ed_is_identity_and_wall_is_incompressible():
    m = LVModel(SHAPE, MOTION, cardiac_cycle(70, sex=0, age=50))
    ed = m.state(0.0)
    rng = np.random.default_rng(2)
    X, Y = _points(rng, 45.0)
    x, y = m.forward_xy(X, Y, 45.0, ed)
    assert np.allclose(x, X) and np.allclose(y, Y)
    st = m.state(m.cycle.t_es_ms)
    R_en, R_ep = SHAPE.radii(np.asarray(45.0))
    R = np.linspace(float(R_en) + 0.1, float(R_ep) - 0.1, 50)
    T = np.linspace(-3, 3, 50)
    F = m.deformation_gradient_xy(R * np.cos(T), R * np.sin(T), np.full(50, 45.0), st)
    # in-plane area change 1/q compensates the long-axis shortening q: volume preserved
    assert np.allclose(np.linalg.det(F) * st.q, 1.0, atol=1e-10)


def test_exact_ecc_of_the_uniform_map():
    m = LVModel(SHAPE, MOTION, cardiac_cycle(70, sex=0, age=50))
    st = m.state(m.cycle.t_es_ms)
    Z = 50.0
    R_en, _ = SHAPE.radii(np.asarray(Z))
    e_rr, e_cc, _ = m.green_strain_polar(np.array([float(R_en)]), np.array([0.3]), np.array([Z]), st)
    # endocardium: rho^2 = R_en^2 (1 - alpha)  ->  E_cc = -alpha / 2 exactly
    assert e_cc[0] == pytest.approx(-st.alpha / 2, abs=1e-12)
    assert st.alpha == pytest.approx(1 - MOTION.v_es / (1 - MOTION.s_long))


def test_regional_factor_and_segments():
    reg = REGIONAL
    Z = np.array([50.0])
    c, hw, lvl = reg._segment_geometry(7)
    assert reg.m(np.array([c]), Z)[0] == pytest.approx(0.0, abs=1e-2)  # akinetic mid anterior
    assert reg.m(np.array([c + math.pi]), Z)[0] == pytest.approx(1.0, abs=1e-6)  # remote wall normal
    assert int(reg.segment_of(np.array([c]), Z)[0]) == 7
    with pytest.raises(ValueError):
        reg._segment_geometry(17)
