"""The seed's verdict protocol (matcher `upstream`), branch by branch, on hand-made cases.

Each case states gold names, predicted names and the verdict the seed's rule gives, with the reason; a
wrong candidate rule, a wrong tie-break, reuse of a prediction or a wrong count rule flips one of them.
"""
from __future__ import annotations

import random

import polars as pl
import pytest

from reportminer.evalkit.loaders import GOLD_SCHEMA, PRED_SCHEMA
from reportminer.evalkit.matchers import (
    FuzzyMatcher,
    MatchStats,
    UpstreamMatcher,
    bigram_jaccard,
    bigrams,
    upstream_reference,
    verdict,
)
from reportminer.evalkit.score import build_cases, score_cases


def run(gold: list[list[str]], pred: list[list[str] | None], matcher=None, stats=None, types=None) -> pl.DataFrame:
    """Score lists of names directly; `None` as a prediction means missing; types default financial."""
    n = len(gold)
    g = pl.DataFrame(
        {
            "id": [str(i) for i in range(1, n + 1)],
            "case": list(range(1, n + 1)),
            "scenario": ["A"] * n,
            "gold_names": gold,
            "gold_types": [["financial"] * len(x) for x in gold],
            "source": [f"t:{i}" for i in range(1, n + 1)],
        },
        schema=GOLD_SCHEMA,
    )
    keep = [(str(i + 1), p) for i, p in enumerate(pred) if p is not None]
    p = pl.DataFrame(
        {
            "id": [k for k, _ in keep],
            "pred_names": [x for _, x in keep],
            "pred_types": [types or ["financial"] * len(x) for _, x in keep],
            "json_valid": [True] * len(keep),
            "error": [None] * len(keep),
            "pred_scenario": [None] * len(keep),
            "source": [f"p:{k}" for k, _ in keep],
        },
        schema=PRED_SCHEMA,
    )
    return score_cases(build_cases(g, p), matcher or UpstreamMatcher(), stats=stats)


def one(gold: list[str], pred: list[str], matcher=None) -> dict:
    return run([gold], [pred], matcher).row(0, named=True)


# ------------------------------------------------------------------------------------ bigram sets


def test_bigrams_of_short_names():
    assert bigrams("率") == {"率"}  # a one-character name is its own single "bigram"
    assert bigrams("毛利率") == {"毛利", "利率"}
    assert bigrams("") == set()
    assert bigram_jaccard("营业收入", "营业收益") == 0.5  # {营业,业收} / {营业,业收,收入,收益}


# --------------------------------------------------------------------------------------- branches

CASES = [
    # (gold, pred, verdict, hits, why)
    (["毛利率"], ["毛利率"], "strict", 1, "equal names"),
    (["净利润"], ["归母净利润增速"], "strict", 1, "containment with Jaccard 2/6 < 0.5 but > 0 is a hit"),
    (["归母净利润增速"], ["净利润"], "strict", 1, "contained the other way round"),
    (["营业收入"], ["营业收益"], "strict", 1, "Jaccard exactly 0.5, no containment: a candidate"),
    (["ABCDE"], ["ABCX"], "fail", 0, "Jaccard 2/5 = 0.4, no containment: not a candidate"),
    (["营业总收入"], ["营业收益"], "fail", 0, "Jaccard 1/6: not a candidate"),
    (["率"], ["率"], "strict", 1, "one-character names, equal"),
    (["率"], ["毛利率"], "fail", 0, "containment but bigram sets {率} and {毛利, 利率} are disjoint: score 0"),
    (["毛利率"], ["率"], "fail", 0, "contained one-character prediction: score 0, never taken"),
    (["A"], ["AB"], "fail", 0, "one-character gold inside a two-character prediction: score 0"),
    (["AB"], ["AB", "A"], "loose", 1, "one extra prediction"),
    (["净利润", "归母净利润"], ["归母净利润", "营业收入"], "fail", 1,
     "the first gold takes 归母净利润 (containment); the second may not reuse it"),
    (["毛利率", "净利率"], ["毛利率", "净利率", "ROE"], "loose", 2, "every gold hit, one extra"),
    (["毛利率", "净利率"], ["毛利率", "净利率", "ROE", "ROA"], "fail", 2, "every gold hit, two extra"),
    (["毛利率"], ["毛利率", "ROE", "ROA"], "fail", 1, "two extra"),
    (["毛利率", "净利率"], ["毛利率"], "fail", 1, "one short: a gold is missed, never loose"),
    (["毛利率", "净利率", "ROE"], ["毛利率", "净利率"], "fail", 2, "one short"),
    ([], [], "strict", 0, "empty gold, empty prediction"),
    ([], ["毛利率"], "loose", 0, "empty gold, one prediction"),
    ([], ["毛利率", "净利率"], "fail", 0, "empty gold, two predictions"),
    (["毛利率"], [], "fail", 0, "nothing predicted"),
    (["毛利率"], ["毛利率", "毛利率"], "loose", 1, "a duplicate prediction counts as an extra metric"),
    (["毛利率", "毛利率"], ["毛利率"], "fail", 1, "one prediction cannot hit two golds"),
]


@pytest.mark.parametrize("gold,pred,expected,hits,why", CASES, ids=[c[4] for c in CASES])
def test_upstream_branch(gold, pred, expected, hits, why):
    r = one(gold, pred)
    assert (r["verdict"], r["n_hits"]) == (expected, hits), why
    assert verdict(len(gold), len(pred), hits) == expected
    assert len(upstream_reference(gold, pred)) == hits


def test_highest_score_wins_over_earlier_candidate():
    r = one(["归母净利润"], ["净利润", "归母净利润"])
    assert [(h["gold"], h["pred"], h["score"]) for h in r["hits"]] == [("归母净利润", "归母净利润", 1.0)]
    assert r["verdict"] == "loose"


def test_first_candidate_wins_ties():
    r = one(["营业收入"], ["营业收益", "营业收支"])  # both Jaccard 0.5
    assert [h["pred"] for h in r["hits"]] == ["营业收益"]


def test_gold_order_decides_who_gets_a_shared_prediction():
    # 净利润 comes first and ties between 归母净利润 and 净利润增速 (both 0.5): it takes the first, so
    # 归母净利润 is left with 净利润增速 (Jaccard 2/6, no containment) and misses. Optimal assignment would
    # hit both; the seed's protocol does not, and `upstream` must not either.
    gold, pred = ["净利润", "归母净利润"], ["归母净利润", "净利润增速"]
    r = one(gold, pred)
    assert r["verdict"] == "fail" and r["n_hits"] == 1
    assert [(h["gold"], h["pred"]) for h in r["hits"]] == [("净利润", "归母净利润")]
    assert one(gold, pred, FuzzyMatcher())["verdict"] == "strict"


def test_missing_prediction_scores_as_empty():
    df = run([["毛利率"], []], [None, None])
    assert df["missing"].to_list() == [True, True]
    assert df["json_valid"].to_list() == [False, False]
    assert df["verdict"].to_list() == ["fail", "strict"]  # empty gold + empty prediction is strict
    assert df["error"].to_list() == ["missing prediction", "missing prediction"]


def test_exact_and_fuzzy_hits_and_types():
    df = run([["毛利率", "净利润"]], [["毛利率", "归母净利润增速"]], types=["financial", "business"])
    r = df.row(0, named=True)
    assert (r["n_hits"], r["exact_hits"], r["type_hits"]) == (2, 1, 1)


# --------------------------------------------------------------------- vectorised == reference, at scale


POOL = ["净利润", "归母净利润", "净利润增速", "利润", "毛利率", "销售毛利率", "率", "营业收入", "营业收益", "收入", "营收"]


def _random_names(rng: random.Random, k: int) -> list[str]:
    """Names that often contain, equal or half-overlap each other, plus short random ones."""
    return [
        rng.choice(POOL) if rng.random() < 0.6 else "".join(rng.choice("ABC") for _ in range(rng.randint(1, 3)))
        for _ in range(k)
    ]


def test_vectorised_upstream_equals_the_reference_on_random_cases():
    rng = random.Random(7)
    gold = [_random_names(rng, rng.randint(0, 4)) for _ in range(3000)]
    pred = [_random_names(rng, rng.randint(0, 5)) for _ in range(3000)]
    stats = MatchStats()
    df = run(gold, pred, stats=stats)
    assert stats.looped_cases > 50, "the collision path must be exercised"
    got = df["hits"].to_list()
    for i, (g, p) in enumerate(zip(gold, pred)):
        ref = upstream_reference(g, p)
        assert [(h["gold"], h["pred"]) for h in got[i]] == [(g[a], p[b]) for a, b, _ in ref], (g, p)
        assert df["verdict"][i] == verdict(len(g), len(p), len(ref))


def test_vectorised_bigram_sets_equal_the_scalar_definition():
    from reportminer.evalkit.matchers import _bigram_matrix

    names = ["毛利率", "率", "", "AB", "ABAB", "营业收入营业", "R", "净利润"]
    m, sizes = _bigram_matrix(names)
    assert sizes.tolist() == [len(bigrams(n)) for n in names]
    for a in range(len(names)):
        for b in range(len(names)):
            inter = m[a].multiply(m[b]).sum()
            assert inter == len(bigrams(names[a]) & bigrams(names[b])), (names[a], names[b])
