"""rewards: the five Boundary Guidance rewards (properties) and Proposition 1 of the system reward."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardsmith import rewards
from guardsmith.errors import GuardsmithError
from guardsmith.rewards import RewardConfig, SystemRewardModel, compute_reward, system_reward

pytestmark = pytest.mark.timeout(90)

unit = st.floats(0.0, 1.0, allow_nan=False)
utility = st.floats(-10.0, 10.0, allow_nan=False)
tau_st = st.floats(0.05, 0.95)
weights = st.floats(0.0, 5.0)


@st.composite
def configs(draw) -> RewardConfig:
    return RewardConfig(tau=draw(tau_st), w_u=draw(weights), w_m=draw(weights), lam=draw(weights),
                        u_refusal=draw(utility))


def r(name: str, t, u, cfg: RewardConfig, t_prompt=None) -> float:
    return float(compute_reward(name, np.array([t]), np.array([u]), cfg, t_prompt=None if t_prompt is None else np.array([t_prompt]))[0])


# --------------------------------------------------------------------------- formulas

def test_formulas_on_examples():
    cfg = RewardConfig(tau=0.5, w_u=2.0, w_m=3.0, lam=0.5, u_refusal=-1.0)
    t = np.array([0.0, 0.2, 0.5, 0.9])
    u = np.array([1.0, -1.0, 0.5, 2.0])
    np.testing.assert_allclose(compute_reward("boundary", t, u, cfg), 2 * u + 3 * np.abs(t - 0.5))
    np.testing.assert_allclose(compute_reward("guard_only", t, u, cfg), [0.5, 0.3, 0.0, 0.4])
    np.testing.assert_allclose(compute_reward("rm_only", t, u, cfg), u)
    np.testing.assert_allclose(compute_reward("filter_avoid", t, u, cfg), [1.0, -1.1, -1.25, -1.45])
    tp = np.array([0.9, 0.1, 0.6, 0.5])  # prompt unsafe, safe, unsafe, unsafe (tau inclusive)
    np.testing.assert_allclose(compute_reward("prompt_aware", t, u, cfg, t_prompt=tp),
                               2 * u + 3 * np.array([-0.5, 0.3, 0.0, 0.4]))
    assert set(rewards.REWARDS) == {"boundary", "guard_only", "rm_only", "filter_avoid", "prompt_aware"}


def test_margin_zscore_on_examples_computed_by_hand():
    # |t - 0.5| = 0.1, 0.3, 0.1, 0.3: mean 0.2, std 0.1, so the z-scored margin is -1, 1, -1, 1
    t = np.array([0.4, 0.8, 0.6, 0.2])
    u = np.array([1.0, -1.0, 0.5, 0.0])
    z = RewardConfig(w_u=2.0, w_m=3.0, margin_normalisation="zscore")
    np.testing.assert_allclose(compute_reward("boundary", t, u, z), [2 - 3, -2 + 3, 1 - 3, 0 + 3])
    np.testing.assert_allclose(compute_reward("boundary", t, u, RewardConfig(w_u=2.0, w_m=3.0)),
                               [2 + 0.3, -2 + 0.9, 1 + 0.3, 0 + 0.9])  # none: the formula as written
    # prompt_aware: unsafe prompts (0.9) take t - tau: -0.1, 0.1, 0.1, -0.1 (mean 0, std 0.1)
    t2, tp = np.array([0.4, 0.6, 0.6, 0.4]), np.array([0.9, 0.1, 0.1, 0.9])
    np.testing.assert_allclose(compute_reward("prompt_aware", t2, np.zeros(4), RewardConfig(margin_normalisation="zscore"),
                                              t_prompt=tp), [-1.0, 1.0, 1.0, -1.0])
    # no spread in the margin: the term is 0 and the reward is the weighted utility
    np.testing.assert_allclose(compute_reward("boundary", [0.2, 0.8], [1.0, 3.0], RewardConfig(w_u=2.0, margin_normalisation="zscore")),
                               [2.0, 6.0])
    # the other rewards have no w_m term and ignore the setting
    for name in ("guard_only", "rm_only", "filter_avoid"):
        np.testing.assert_allclose(compute_reward(name, t, u, z), compute_reward(name, t, u, RewardConfig(w_u=2.0, w_m=3.0)))


def test_margin_balance_and_equalising_weight_by_hand():
    # u spreads 1 (values +-1), |t - tau| spreads 0.1 (0.1 / 0.3): w_m = w_u * 1 / 0.1
    u, m = [1.0, -1.0, 1.0, -1.0], rewards.margin_term([0.4, 0.8, 0.6, 0.2])
    np.testing.assert_allclose(m, [0.1, 0.3, 0.1, 0.3])
    balance = rewards.margin_balance(u, m, w_u=2.0)
    assert balance["utility_std"] == pytest.approx(1.0) and balance["margin_std"] == pytest.approx(0.1)
    assert balance["w_margin"] == pytest.approx(20.0)
    # with that weight the margin part of the paper formula spreads as much as the utility part
    cfg = RewardConfig(w_u=2.0, w_m=balance["w_margin"])
    parts = compute_reward("boundary", [0.4, 0.8, 0.6, 0.2], [0.0] * 4, cfg)
    assert parts.std() == pytest.approx((2.0 * np.array(u)).std())
    assert rewards.margin_balance([1.0, 2.0], [0.3, 0.3])["w_margin"] is None
    assert rewards.margin_term([0.7, 0.7], t_prompt=[0.6, 0.2]).tolist() == pytest.approx([0.2, 0.2])
    assert rewards.margin_term([0.3, 0.3], t_prompt=[0.6, 0.2]).tolist() == pytest.approx([-0.2, 0.2])


@settings(max_examples=100, deadline=None)
@given(t=st.lists(unit, min_size=2, max_size=32), w_m=st.floats(0.1, 5.0), tau=tau_st)
def test_zscored_margin_part_spreads_exactly_w_m(t, w_m, tau):
    t_arr = np.array(t)
    cfg = RewardConfig(tau=tau, w_m=w_m, margin_normalisation="zscore")
    part = compute_reward("boundary", t_arr, np.zeros_like(t_arr), cfg)
    if np.abs(t_arr - tau).std() > 1e-6:
        assert part.std() == pytest.approx(w_m, rel=1e-6) and part.mean() == pytest.approx(0.0, abs=1e-6)
        # the ranking by distance from the boundary is kept
        order = np.argsort(np.abs(t_arr - tau), kind="stable")
        assert np.all(np.diff(part[order]) >= -1e-9)


@pytest.mark.parametrize("call, match", [
    (lambda: compute_reward("nope", [0.1], [0.0]), "unknown reward"),
    (lambda: compute_reward("boundary", [1.2], [0.0]), r"t must be a probability"),
    (lambda: compute_reward("boundary", [float("nan")], [0.0]), r"t must be a probability"),
    (lambda: compute_reward("boundary", [0.1], [float("inf")]), "u must be finite"),
    (lambda: compute_reward("boundary", [0.1, 0.2], [0.0]), "same shape"),
    (lambda: compute_reward("prompt_aware", [0.1], [0.0]), "needs t_prompt"),
    (lambda: compute_reward("prompt_aware", [0.1], [0.0], t_prompt=[0.1, 0.2]), "t_prompt must have the shape"),
    (lambda: RewardConfig(tau=1.0), "tau must be in"),
    (lambda: RewardConfig(w_m=-1.0), "w_m must be"),
    (lambda: RewardConfig(margin_normalisation="max"), "unknown margin_normalisation"),
    (lambda: SystemRewardModel(utility=-2.0, harm_cost=1.0), "utility \\+ harm_cost"),
    (lambda: SystemRewardModel(refusal_value=1.0, false_positive_cost=0.0, blocked_value=1.0), "blocked_value"),
])
def test_errors(call, match):
    with pytest.raises(GuardsmithError, match=match):
        call()


# --------------------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(t=unit, u=utility, cfg=configs())
def test_boundary_margin_part_is_nonnegative_and_bounded(t, u, cfg):
    margin_part = r("boundary", t, u, cfg) - cfg.w_u * u
    assert margin_part >= -1e-12
    assert margin_part <= cfg.w_m * max(cfg.tau, 1 - cfg.tau) + 1e-9


@settings(max_examples=200, deadline=None)
@given(d=st.floats(0.0, 1.0), u=utility, cfg=configs())
def test_boundary_symmetric_around_tau(d, u, cfg):
    d = min(d, cfg.tau, 1 - cfg.tau)  # both tau - d and tau + d in [0, 1]
    assert r("boundary", cfg.tau - d, u, cfg) == pytest.approx(r("boundary", cfg.tau + d, u, cfg), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(t=unit, u=utility, w_u=weights, w_m=weights)
def test_boundary_maximal_at_0_and_1(t, u, w_u, w_m):
    cfg = RewardConfig(tau=0.5, w_u=w_u, w_m=w_m)
    top = r("boundary", 0.0, u, cfg)
    assert top == pytest.approx(r("boundary", 1.0, u, cfg))
    assert r("boundary", t, u, cfg) <= top + 1e-9


@settings(max_examples=200, deadline=None)
@given(t=unit, u=utility, cfg=configs())
def test_guard_only_minimal_at_tau_and_ignores_u(t, u, cfg):
    assert r("guard_only", cfg.tau, u, cfg) == 0.0
    assert r("guard_only", t, u, cfg) >= 0.0
    assert r("guard_only", t, u, cfg) == r("guard_only", t, 0.0, cfg)
    assert r("rm_only", t, u, cfg) == u


@settings(max_examples=200, deadline=None)
@given(t1=unit, t2=unit, u=utility, cfg=configs())
def test_filter_avoid_decreasing_in_t(t1, t2, u, cfg):
    lo, hi = sorted((t1, t2))
    cfg = RewardConfig(tau=cfg.tau, lam=cfg.lam, u_refusal=min(cfg.u_refusal, u))  # refusal worth <= utility
    assert r("filter_avoid", hi, u, cfg) <= r("filter_avoid", lo, u, cfg) + 1e-12
    if hi - lo > 1e-6 and cfg.lam > 1e-3:
        assert r("filter_avoid", hi, u, cfg) < r("filter_avoid", lo, u, cfg)


@settings(max_examples=200, deadline=None)
@given(t=unit, tp=unit, u=utility, cfg=configs())
def test_prompt_aware_is_boundary_on_safe_prompts_and_pushes_up_on_unsafe(t, tp, u, cfg):
    pa = r("prompt_aware", t, u, cfg, t_prompt=tp)
    if tp < cfg.tau:
        assert pa == pytest.approx(r("boundary", t, u, cfg))
    else:
        assert pa <= r("boundary", t, u, cfg) + 1e-12
        assert r("prompt_aware", min(t + 0.1, 1.0), u, cfg, t_prompt=tp) >= pa - 1e-12


def test_vectorised_matches_scalar():
    rng = np.random.default_rng(0)
    t, u, tp = rng.random(50), rng.normal(size=50), rng.random(50)
    cfg = RewardConfig(tau=0.3, w_u=0.5, w_m=2.0, lam=0.7, u_refusal=-0.2)
    for name in rewards.REWARDS:
        vec = compute_reward(name, t, u, cfg, t_prompt=tp)
        assert vec.shape == (50,)
        assert np.allclose(vec, [r(name, a, b, cfg, c) for a, b, c in zip(t, u, tp)])


# --------------------------------------------------------------------------- Proposition 1 (seed 001)

def _check_prop1(model: SystemRewardModel, grid: np.ndarray) -> None:
    values = system_reward(grid, model)
    below, above = values[grid < model.tau], values[grid >= model.tau]
    assert np.all(np.diff(below) < 0), "expected reward must be strictly decreasing for t < tau"
    assert np.all(np.diff(above) > 0), "expected reward must be strictly increasing for t >= tau"


def test_proposition_1_dense_grid():
    model = SystemRewardModel()
    grid = np.linspace(0.0, 1.0, 100_001)
    _check_prop1(model, grid)
    # with the defaults tau = 0.5 is the Bayes-optimal threshold: the boundary is the minimum
    assert model.bayes_threshold() == pytest.approx(0.5)
    values = system_reward(grid, model)
    assert values.min() == pytest.approx(system_reward(np.array([0.5]), model)[0], abs=1e-4)
    assert system_reward(np.array([0.0, 1.0]), model).tolist() == [1.0, 0.5]


@settings(max_examples=300, deadline=None)
@given(tau=tau_st, u=st.floats(-5, 5), h=st.floats(-5, 5), v0=st.floats(-5, 5), c=st.floats(-5, 5), b=st.floats(-5, 5))
def test_proposition_1_for_valid_parameters(tau, u, h, v0, c, b):
    valid = u + h > 1e-3 and b - (v0 - c) > 1e-3
    if not valid:
        if u + h <= 0 or b <= v0 - c:
            with pytest.raises(GuardsmithError):
                SystemRewardModel(utility=u, harm_cost=h, refusal_value=v0, false_positive_cost=c,
                                  blocked_value=b, tau=tau)
        return
    model = SystemRewardModel(utility=u, harm_cost=h, refusal_value=v0, false_positive_cost=c, blocked_value=b, tau=tau)
    _check_prop1(model, np.linspace(0.0, 1.0, 2001))


def test_system_reward_branches():
    m = SystemRewardModel(utility=2.0, harm_cost=3.0, refusal_value=0.5, false_positive_cost=1.0, blocked_value=1.5, tau=0.4)
    t = np.array([0.0, 0.2, 0.4, 1.0])
    np.testing.assert_allclose(system_reward(t, m), [2.0, 0.8 * 2 - 0.2 * 3, 0.6 * -0.5 + 0.4 * 1.5, 1.5])
    assert rewards.filtered(t, 0.4).tolist() == [False, False, True, True]
