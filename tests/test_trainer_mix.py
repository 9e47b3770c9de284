"""The training mix: oversampling by label count and scenario, reproducible, train split only."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from reportminer.trainer.config import ConfigError, build_config, parse_set
from reportminer.trainer.mix import describe, mix_rows, row_weight
from reportminer.trainer.rows import LabelledRow, read_rows

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "data"


def _row(n: int, scenario: str = "A", i: int = 0) -> LabelledRow:
    metrics = [{"metric_name": f"m{k}", "metric_type": "financial", "score": 0.9, "reason": "r"} for k in range(n)]
    return LabelledRow(source=f"x.jsonl:{i}", chapter_title="t", paragraph=f"p{i}", output={"analysis": "a", "metrics": metrics},
                       scenario=scenario)


def test_weights_multiply_and_clamp_to_largest_count_key() -> None:
    assert row_weight(_row(1, "B"), {1: 2.0}, {"B": 1.5}) == 3.0
    assert row_weight(_row(4), {0: 2.0, 3: 0.5}, {}) == 0.5  # counts above the largest key take its weight
    assert row_weight(_row(2), {0: 2.0, 3: 0.5}, {}) == 1.0  # a missing key weighs 1


def test_integer_weights_copy_exactly_and_zero_removes() -> None:
    rows = [_row(n, i=i) for i, n in enumerate([0, 1, 2, 3])]
    out = mix_rows(rows, {0: 3, 1: 2, 2: 1, 3: 0}, {}, seed=1)
    assert Counter(r.paragraph for r in out) == {"p0": 3, "p1": 2, "p2": 1}
    with pytest.raises(ValueError, match="removed every"):
        mix_rows(rows, {0: 0, 1: 0, 2: 0, 3: 0}, {}, seed=1)
    with pytest.raises(ValueError, match=">= 0"):
        mix_rows(rows, {0: -1}, {}, seed=1)


def test_fractional_weights_are_reproducible_and_unbiased() -> None:
    rows = [_row(3, i=i) for i in range(2000)]
    a = mix_rows(rows, {3: 0.3}, {}, seed=7)
    assert a == mix_rows(rows, {3: 0.3}, {}, seed=7)
    assert a != mix_rows(rows, {3: 0.3}, {}, seed=8)
    assert 500 < len(a) < 700  # 0.3 x 2000 = 600 expected


def test_no_weights_is_the_identity() -> None:
    rows = [_row(2, i=i) for i in range(5)]
    assert mix_rows(rows, {}, {}, seed=0) == rows
    assert describe(rows) == {"rows": 5, "by_count": {"2": 5}, "by_type": {"A": 5}, "mean_count": 2.0}


def test_recipe_keys_coerce_from_set() -> None:
    cfg = build_config("tiny-cpu", parse_set(["count_weights={0: 2, 1: 2.5}", "type_weights={B: 1.5}"]))
    assert cfg.count_weights == {0: 2.0, 1: 2.5} and cfg.type_weights == {"B": 1.5}
    with pytest.raises(ConfigError, match="count_weights"):
        build_config("tiny-cpu", parse_set(["count_weights=[1, 2]"]))


@pytest.mark.skipif(not SEED.exists(), reason="seed data (../shared/seed) not present on this machine")
def test_count_mix_moves_the_seed_prior_towards_one_or_two_metrics() -> None:
    rows = read_rows(SEED)
    before, after = describe(rows), describe(mix_rows(rows, {0: 2, 1: 2, 2: 1, 3: 0.5, 4: 0.5}, {}, seed=42))
    assert before["mean_count"] > 2.0 and after["mean_count"] < 1.8
    assert json.dumps(after)  # JSON-serialisable: it goes into the adapter manifest
