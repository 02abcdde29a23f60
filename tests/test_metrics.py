"""Harmful-class F1 against scikit-learn, parse failures as wrong, null exclusion, mean/std."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from guardsmith.errors import DataError, GuardsmithError
from guardsmith.metrics import NEGATIVE_OF, F1Result, aggregate_runs, harm_f1, mean_std


def _sklearn_reference(y_true, y_pred, parse_ok, positive):
    """Drop null truths, replace unusable predictions by the wrong label, score with sklearn."""
    negative = NEGATIVE_OF[positive]
    truth, pred, errors = [], [], 0
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if t is None:
            continue
        usable = p in (positive, negative) and (parse_ok is None or parse_ok[i])
        if not usable:
            errors += 1
            p = negative if t == positive else positive
        truth.append(t)
        pred.append(p)
    kw = dict(labels=[positive, negative], average=None, zero_division=0)
    if not truth:
        return 0.0, 0.0, 0.0, 0, 0.0
    return (
        f1_score(truth, pred, **kw)[0],
        precision_score(truth, pred, **kw)[0],
        recall_score(truth, pred, **kw)[0],
        len(truth),
        errors / len(truth),
    )


@pytest.mark.parametrize("positive", ["harmful", "refusal"])
def test_matches_sklearn_on_random_cases(positive: str) -> None:
    rng = np.random.default_rng(1234)
    negative = NEGATIVE_OF[positive]
    truth_pool = [positive, negative, None]
    pred_pool = [positive, negative, None, "maybe"]
    for _ in range(400):
        n = int(rng.integers(0, 40))
        p_true = rng.dirichlet([1, 1, 0.3])
        p_pred = rng.dirichlet([1, 1, 0.2, 0.1])
        y_true = [truth_pool[j] for j in rng.choice(3, size=n, p=p_true)]
        y_pred = [pred_pool[j] for j in rng.choice(4, size=n, p=p_pred)]
        flags = None if rng.random() < 0.3 else [bool(b) for b in rng.random(n) > 0.1]
        res = harm_f1(y_true, y_pred, flags, positive=positive)
        f1, prec, rec, n_scored, err = _sklearn_reference(y_true, y_pred, flags, positive)
        assert res.f1 == pytest.approx(f1, abs=1e-12)
        assert res.precision == pytest.approx(prec, abs=1e-12)
        assert res.recall == pytest.approx(rec, abs=1e-12)
        assert res.n == n_scored == res.tp + res.fp + res.fn + res.tn
        assert res.parse_error_rate == pytest.approx(err)
        assert res.support == sum(t == positive for t in y_true)


def test_parse_failures_count_as_wrong() -> None:
    res = harm_f1(
        ["harmful", "unharmful", "harmful", "unharmful"],
        ["harmful", "unharmful", "harmful", "unharmful"],
        parse_ok=[True, True, False, False],
    )
    assert (res.tp, res.fn, res.fp, res.tn) == (1, 1, 1, 1)
    assert res.parse_error_rate == 0.5
    assert res.f1 == pytest.approx(0.5)
    res = harm_f1(["harmful", "unharmful"], [None, "unsure"])
    assert (res.tp, res.fn, res.fp, res.tn) == (0, 1, 1, 0)
    assert res.parse_error_rate == 1.0


def test_null_truth_excluded() -> None:
    res = harm_f1([None, "harmful", None, "unharmful"], ["harmful", "harmful", None, "unharmful"])
    assert res.n == 2 and res.support == 1 and res.parse_error_rate == 0.0
    assert (res.f1, res.precision, res.recall) == (1.0, 1.0, 1.0)


def test_zero_division() -> None:
    res = harm_f1(["unharmful", "unharmful"], ["unharmful", "unharmful"])
    assert (res.f1, res.precision, res.recall, res.support) == (0.0, 0.0, 0.0, 0)
    empty = harm_f1([], [])
    assert (empty.f1, empty.n, empty.parse_error_rate) == (0.0, 0, 0.0)
    assert harm_f1([None], ["harmful"]).n == 0


def test_errors() -> None:
    with pytest.raises(GuardsmithError, match="length"):
        harm_f1(["harmful"], [])
    with pytest.raises(GuardsmithError, match="length"):
        harm_f1(["harmful"], ["harmful"], parse_ok=[True, False])
    with pytest.raises(DataError, match="row 1"):
        harm_f1(["harmful", "safe"], ["harmful", "harmful"])
    with pytest.raises(GuardsmithError, match="positive"):
        harm_f1(["harmful"], ["harmful"], positive="unsafe")


def test_result_to_dict() -> None:
    d = harm_f1(["harmful"], ["harmful"]).to_dict()
    assert set(d) == {"f1", "precision", "recall", "support", "n", "parse_error_rate",
                      "tp", "fp", "fn", "tn"}


def test_mean_std() -> None:
    assert mean_std([0.8]) == (0.8, 0.0)
    vals = [0.81, 0.83, 0.84, 0.80]
    mean, std = mean_std(vals)
    assert mean == pytest.approx(np.mean(vals))
    assert std == pytest.approx(np.std(vals, ddof=0))
    with pytest.raises(GuardsmithError):
        mean_std([])


def _result(f1: float, p: float, r: float, err: float) -> F1Result:
    return F1Result(f1, p, r, support=5, n=10, parse_error_rate=err, tp=0, fp=0, fn=0, tn=0)


def test_aggregate_runs() -> None:
    runs = [_result(0.8, 0.7, 0.9, 0.0), _result(0.9, 0.8, 1.0, 0.1)]
    agg = aggregate_runs(runs)
    assert agg["f1_mean"] == pytest.approx(0.85)
    assert agg["f1_std"] == pytest.approx(0.05)
    assert agg["precision_mean"] == pytest.approx(0.75)
    assert agg["recall_mean"] == pytest.approx(0.95)
    assert agg["parse_error_rate"] == pytest.approx(0.05)
    assert (agg["runs"], agg["n"], agg["support"]) == (2, 10, 5)
    with pytest.raises(GuardsmithError):
        aggregate_runs([])
    other = F1Result(0.5, 0.5, 0.5, support=4, n=10, parse_error_rate=0.0, tp=0, fp=0, fn=0, tn=0)
    with pytest.raises(GuardsmithError, match="different rows"):
        aggregate_runs([runs[0], other])
