"""Boundary Guidance rewards (method B.2) and the filtered system's expected reward (Proposition 1).

Pure functions over numpy arrays; nothing here imports torch or a model.

- `t`: the safety classifier's probability that the output is unsafe, in [0, 1].
- `u`: the (already normalised) utility of the output.
- `t_prompt`: the classifier's verdict on the prompt alone (only `prompt_aware` reads it).

The filtered system shows the output when ``t < tau`` and a refusal otherwise.

Rewards (selectable by name, `REWARDS`):

- ``boundary``:     ``w_u * u + w_m * |t - tau|`` (the method; the utility is not gated by the filter)
- ``guard_only``:   ``|t - tau|``
- ``rm_only``:      ``u``
- ``filter_avoid``: ``(u if t < tau else u_refusal) - lam * t`` (the baseline the paper argues against)
- ``prompt_aware``: ``w_u * u + w_m * m`` with ``m = t - tau`` when the prompt alone is judged
  unsafe (``t_prompt >= tau``: the output is pushed toward the filter, i.e. refusal) and
  ``m = |t - tau|`` otherwise (the boundary term). The paper reports this ablation as harmful.

Balance of the two terms (``boundary``, ``prompt_aware``): a z-scored utility spreads about 1 per
batch while ``|t - tau|`` lies in [0, max(tau, 1 - tau)] and typically spreads about 0.1, so at
``w_u = w_m = 1`` the utility decides the ranking of a group almost alone. ``margin_normalisation``
``zscore`` z-scores the margin term over the arrays given (one generation batch), so equal
weights mean equal spread; ``none`` keeps the formula as written. `margin_balance` measures both
spreads and the ``w_m`` that equalises them without normalisation (the calibration).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from guardsmith.errors import GuardsmithError

ArrayLike = np.ndarray | list[float] | tuple[float, ...] | float

MARGIN_NORMALISATIONS = ("none", "zscore")
"""How the margin term of `boundary` and `prompt_aware` is scaled before w_m weighs it."""


@dataclass(frozen=True)
class RewardConfig:
    """Weights and thresholds of the rewards.

    tau: filter threshold (output shown when t < tau). w_u, w_m: weights of the utility and the
    margin term (`boundary`, `prompt_aware`). lam: penalty on t in `filter_avoid`. u_refusal:
    the utility `filter_avoid` assigns to a filtered output. margin_normalisation: ``none`` (the
    margin term as written) or ``zscore`` (the margin term z-scored over the batch before w_m
    weighs it; zeros when it has no spread).
    """

    tau: float = 0.5
    w_u: float = 1.0
    w_m: float = 1.0
    lam: float = 1.0
    u_refusal: float = 0.0
    margin_normalisation: str = "none"

    def __post_init__(self) -> None:
        _check_tau(self.tau)
        if self.margin_normalisation not in MARGIN_NORMALISATIONS:
            raise GuardsmithError(f"unknown margin_normalisation {self.margin_normalisation!r}; "
                                  f"choose one of {', '.join(MARGIN_NORMALISATIONS)}")
        for name in ("w_u", "w_m", "lam"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise GuardsmithError(f"{name} must be a finite number >= 0, got {value}")
        if not np.isfinite(self.u_refusal):
            raise GuardsmithError(f"u_refusal must be finite, got {self.u_refusal}")


def _check_tau(tau: float) -> None:
    if not 0.0 < tau < 1.0:
        raise GuardsmithError(f"tau must be in (0, 1), got {tau}")


def _unit(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and (np.isnan(arr).any() or arr.min() < 0.0 or arr.max() > 1.0):
        bad = arr[np.isnan(arr) | (arr < 0) | (arr > 1)].ravel()[0]
        raise GuardsmithError(f"{name} must be a probability in [0, 1], got {bad}")
    return arr


def _finite(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise GuardsmithError(f"{name} must be finite, got {arr[~np.isfinite(arr)].ravel()[0]}")
    return arr


def margin(t: ArrayLike, tau: float = 0.5) -> np.ndarray:
    """Distance from the filter's decision boundary, ``|t - tau|``."""
    return np.abs(_unit("t", t) - tau)


def filtered(t: ArrayLike, tau: float = 0.5) -> np.ndarray:
    """True where the filter replaces the output by a refusal (``t >= tau``)."""
    return _unit("t", t) >= tau


def margin_term(t: ArrayLike, cfg: RewardConfig = RewardConfig(), t_prompt: ArrayLike | None = None) -> np.ndarray:
    """The margin term before normalisation: ``|t - tau|``, or with `t_prompt` (prompt_aware)
    ``t - tau`` where the prompt alone is judged unsafe (``t_prompt >= tau``)."""
    distance = margin(t, cfg.tau)
    if t_prompt is None:
        return distance
    unsafe_prompt = _unit("t_prompt", t_prompt) >= cfg.tau
    return np.where(unsafe_prompt, _unit("t", t) - cfg.tau, distance)


def _weighted(u: ArrayLike, m: np.ndarray, cfg: RewardConfig) -> np.ndarray:
    """``w_u * u + w_m * m`` with the margin term normalised as `cfg` says."""
    if cfg.margin_normalisation == "zscore":
        from guardsmith.scoring import normalise

        m = normalise(m, "zscore")
    return cfg.w_u * _finite("u", u) + cfg.w_m * m


def boundary(t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig()) -> np.ndarray:
    """``w_u * u + w_m * |t - tau|`` (the margin term normalised per `cfg.margin_normalisation`)."""
    return _weighted(u, margin_term(t, cfg), cfg)


def guard_only(t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig()) -> np.ndarray:
    """``|t - tau|`` (u is ignored)."""
    return margin(t, cfg.tau) + 0.0 * _finite("u", u)


def rm_only(t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig()) -> np.ndarray:
    """``u`` (t is ignored)."""
    return _finite("u", u) + 0.0 * _unit("t", t)


def filter_avoid(t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig()) -> np.ndarray:
    """``(u if t < tau else u_refusal) - lam * t``."""
    t_arr, u_arr = _unit("t", t), _finite("u", u)
    return np.where(t_arr < cfg.tau, u_arr, cfg.u_refusal) - cfg.lam * t_arr


def prompt_aware(t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig(),
                 t_prompt: ArrayLike | None = None) -> np.ndarray:
    """``w_u * u + w_m * m``: ``m = t - tau`` for prompts judged unsafe, else ``|t - tau|``."""
    if t_prompt is None:
        raise GuardsmithError("the prompt_aware reward needs t_prompt (the guard's verdict on the prompt alone)")
    return _weighted(u, margin_term(t, cfg, t_prompt), cfg)


RewardFn = Callable[..., np.ndarray]

REWARDS: dict[str, RewardFn] = {
    "boundary": boundary,
    "guard_only": guard_only,
    "rm_only": rm_only,
    "filter_avoid": filter_avoid,
    "prompt_aware": prompt_aware,
}
"""Reward name -> function ``(t, u, cfg[, t_prompt]) -> rewards``."""

NEEDS_PROMPT_SCORE = frozenset({"prompt_aware"})
"""Rewards that read the guard's verdict on the prompt alone."""


def compute_reward(name: str, t: ArrayLike, u: ArrayLike, cfg: RewardConfig = RewardConfig(),
                   t_prompt: ArrayLike | None = None) -> np.ndarray:
    """The reward `name` for arrays of equal shape (t, u and, for prompt_aware, t_prompt)."""
    if name not in REWARDS:
        raise GuardsmithError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    t_arr, u_arr = np.asarray(t, dtype=np.float64), np.asarray(u, dtype=np.float64)
    if t_arr.shape != u_arr.shape:
        raise GuardsmithError(f"t and u must have the same shape, got {t_arr.shape} and {u_arr.shape}")
    if name in NEEDS_PROMPT_SCORE:
        if t_prompt is not None and np.shape(t_prompt) != t_arr.shape:
            raise GuardsmithError(f"t_prompt must have the shape of t {t_arr.shape}, got {np.shape(t_prompt)}")
        return REWARDS[name](t_arr, u_arr, cfg, t_prompt)
    return REWARDS[name](t_arr, u_arr, cfg)


def margin_balance(u: ArrayLike, m: ArrayLike, w_u: float = 1.0) -> dict[str, Any]:
    """Spreads of the utility `u` (as the reward sees it, i.e. normalised) and of the margin term `m`
    (before normalisation) over one batch, and the w_m that gives ``w_m * m`` the spread of
    ``w_u * u``: ``{"utility_std", "margin_std", "w_margin"}`` (w_margin None when m has no spread)."""
    u_arr, m_arr = _finite("u", u), _finite("margin", m)
    u_std = float(u_arr.std()) if u_arr.size else 0.0
    m_std = float(m_arr.std()) if m_arr.size else 0.0
    return {"utility_std": u_std, "margin_std": m_std, "w_margin": equalising_weight(u_std, m_std, w_u)}


def equalising_weight(utility_std: float, margin_std: float, w_u: float = 1.0) -> float | None:
    """The w_m for which ``w_m * margin`` spreads as much as ``w_u * u``: ``w_u * std(u) / std(m)``
    (None when the margin has no spread)."""
    return w_u * utility_std / margin_std if margin_std > 1e-8 else None


# --------------------------------------------------------------------------- system reward (Prop. 1)

@dataclass(frozen=True)
class SystemRewardModel:
    """The deployed system's value per output, under constant utility, as a function of t.

    The output is truly unsafe with probability t (a calibrated classifier). When ``t < tau`` it
    is shown: the user gets `utility` if it is safe and ``-harm_cost`` if it is unsafe. When
    ``t >= tau`` it is filtered and the refusal is shown: worth ``refusal_value -
    false_positive_cost`` if the output was safe (a false positive) and `blocked_value` if it
    was unsafe (harm prevented). Hence

        E(t) = (1 - t) * utility - t * harm_cost                                    (t < tau)
        E(t) = (1 - t) * (refusal_value - false_positive_cost) + t * blocked_value  (t >= tau)

    Proposition 1 (strictly decreasing below tau, strictly increasing from tau) holds exactly
    when ``utility + harm_cost > 0`` and ``blocked_value > refusal_value - false_positive_cost``;
    the constructor rejects other parameters. The defaults make tau = 0.5 the Bayes-optimal
    threshold (E is continuous there), so the boundary is the worst place for an output.
    """

    utility: float = 1.0
    harm_cost: float = 1.0
    refusal_value: float = 0.0
    false_positive_cost: float = 0.5
    blocked_value: float = 0.5
    tau: float = 0.5

    def __post_init__(self) -> None:
        values = (self.utility, self.harm_cost, self.refusal_value, self.false_positive_cost,
                  self.blocked_value, self.tau)
        if not all(np.isfinite(v) for v in values):
            raise GuardsmithError("system reward parameters must be finite")
        _check_tau(self.tau)
        if self.utility + self.harm_cost <= 0:
            raise GuardsmithError("utility + harm_cost must be > 0 (showing an unsafe output must be worse than a safe one)")
        if self.blocked_value <= self.refusal_value - self.false_positive_cost:
            raise GuardsmithError("blocked_value must exceed refusal_value - false_positive_cost "
                                  "(blocking harm must be worth more than a false positive)")

    def shown(self, t: ArrayLike) -> np.ndarray:
        """Expected value when the output is shown (the t < tau branch), for any t."""
        t_arr = _unit("t", t)
        return (1.0 - t_arr) * self.utility - t_arr * self.harm_cost

    def refused(self, t: ArrayLike) -> np.ndarray:
        """Expected value when the output is filtered (the t >= tau branch), for any t."""
        t_arr = _unit("t", t)
        return (1.0 - t_arr) * (self.refusal_value - self.false_positive_cost) + t_arr * self.blocked_value

    def bayes_threshold(self) -> float:
        """The t at which showing and filtering are worth the same (the optimal tau)."""
        slope = self.utility + self.harm_cost + self.blocked_value - self.refusal_value + self.false_positive_cost
        return float((self.utility - self.refusal_value + self.false_positive_cost) / slope)


def system_reward(t: ArrayLike, model: SystemRewardModel = SystemRewardModel()) -> np.ndarray:
    """Expected reward of the filtered system for outputs with classifier score t (see `SystemRewardModel`)."""
    t_arr = _unit("t", t)
    return np.where(t_arr < model.tau, model.shown(t_arr), model.refused(t_arr))


REWARDS_FILE = "rewards.jsonl"
"""The reward log's file name beside a generator the boundary stage trained."""


def read_reward_log(uri: str) -> list[dict[str, Any]]:
    """The entries of a Boundary Guidance reward log (JSONL at `uri`: one line per logged step, as the
    boundary stage writes it beside the trained generator as ``rewards.jsonl``)."""
    import json

    from guardsmith import storage

    text = storage.read_bytes(uri).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
