"""A/B with confidence: the statistics on synthetic samples, and `edgeloop compare` on a real
local agent with two real models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.ab_models import build_pair, edgeloop
from toolkit.stats import Spread, Verdict, compare_rounds, interleaved_order


def _rounds(rng, scale: float, rounds: int = 6, n: int = 300, jitter: float = 0.02):
    """Latency samples (ms) per round: lognormal around `scale`, each round (a fresh run)
    shifted by its own `jitter` (run-to-run noise)."""
    return [scale * (1 + jitter * rng.standard_normal()) * rng.lognormal(0.0, 0.1, n)
            for _ in range(rounds)]


@pytest.mark.parametrize("true_ratio,verdict", [(1.15, Verdict.SLOWER), (0.8, Verdict.FASTER)])
def test_a_known_ratio_lies_inside_the_interval_and_gets_its_verdict(true_ratio, verdict):
    rng = np.random.default_rng(7)
    c = compare_rounds(_rounds(rng, 2.0), _rounds(rng, 2.0 * true_ratio))
    assert c.ci_low <= true_ratio <= c.ci_high
    assert c.ci_low < c.ratio < c.ci_high
    assert abs(c.ratio - true_ratio) < 0.03
    assert c.verdict is verdict


def test_identical_distributions_give_no_detectable_difference():
    rng = np.random.default_rng(3)
    c = compare_rounds(_rounds(rng, 1.0), _rounds(rng, 1.0))
    assert c.verdict is Verdict.NO_DIFFERENCE
    assert c.ci_low < 1 < c.ci_high


def test_identical_models_are_rarely_called_different():
    """The interval's false alarms stay near (below) its nominal 5% with few, noisy rounds;
    a plain percentile bootstrap over 5 rounds raised them in ~16% of these cases."""
    alarms = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        c = compare_rounds(_rounds(rng, 1.0, rounds=5), _rounds(rng, 1.0, rounds=5),
                           resamples=500, seed=seed)
        alarms += c.verdict is not Verdict.NO_DIFFERENCE
    assert alarms <= 4  # 10% of 40: generous for a 5% test


def test_the_interval_is_seeded_and_drift_shared_by_a_round_cancels():
    rng = np.random.default_rng(11)
    a, b = _rounds(rng, 1.0, jitter=0.0), _rounds(rng, 1.1, jitter=0.0)
    drift = [1.0, 1.3, 0.8, 1.2, 0.9, 1.1]  # the device speeds up and slows down by round
    a = [x * d for x, d in zip(a, drift)]
    b = [x * d for x, d in zip(b, drift)]
    first, again = compare_rounds(a, b, seed=5), compare_rounds(a, b, seed=5)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.ci_low <= 1.1 <= first.ci_high and first.verdict is Verdict.SLOWER


def test_rounds_alternate_their_order_and_too_few_are_refused():
    assert interleaved_order(3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 3"):
        compare_rounds(_rounds(rng, 1.0, rounds=2), _rounds(rng, 1.0, rounds=2))
    with pytest.raises(ValueError, match="round 1 has no samples"):
        compare_rounds([[1.0], [], [1.0]], [[1.0], [1.0], [1.0]])


def test_spread_of_repeated_runs_is_the_range_over_the_median():
    s = Spread.from_p50s([2.0, 2.1, 1.9, 2.0])
    assert s.median_p50_ms == 2.0 and s.min_p50_ms == 1.9 and s.max_p50_ms == 2.1
    assert s.relative_spread == pytest.approx(0.1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return build_pair(tmp_path_factory.mktemp("ab-models"))


@pytest.fixture()
def home(tmp_path):
    home = tmp_path / "home"
    yield home
    edgeloop("agent", "stop", home=home, check=False)


def test_compare_on_a_real_agent_finds_the_wider_model_slower_with_confidence(pair, home):
    tiny, wide = pair
    done = edgeloop("compare", str(tiny), str(wide), "--rounds", "4", "--min-seconds", "0.1",
                    "--warmup", "2", "--json", home=home)
    result = json.loads(done.stdout)
    assert result["verdict"] == "slower", result
    assert result["ci_low"] > 1.5 and result["ci_low"] <= result["ratio"] <= result["ci_high"]
    assert result["rounds"] == 4 and len(result["a_round_p50_ms"]) == 4
    rows = json.loads(edgeloop("results", "--format", "json", home=home).stdout)
    assert [r["model_name"] for r in rows] == ["tiny.tflite", "wide.tflite", "wide.tflite",
                                               "tiny.tflite"] * 2  # A B, B A: interleaved
    assert len({r["run_id"] for r in rows}) == 1
    swapped = edgeloop("compare", str(wide), str(tiny), "--rounds", "3", "--min-seconds", "0.1",
                       "--warmup", "2", home=home)
    assert "tiny.tflite is faster than wide.tflite by" in swapped.stdout, swapped.stdout
