"""Fuzzy and embedding matchers: thresholds, containment, optimal one-to-one assignment, embeddings."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from reportminer.evalkit.embed import UseEmbedder, load_embedder
from reportminer.evalkit.matchers import EmbeddingMatcher, FuzzyMatcher, MatchStats, make_matcher, normalise

from test_evalkit_protocol import one, run


def test_fuzzy_threshold_flag_decides():
    # 营业收入增速 vs 营业收入同比增速: Levenshtein 2 over 8 characters -> 0.75, no containment
    assert one(["营业收入增速"], ["营业收入同比增速"], FuzzyMatcher(threshold=0.7))["verdict"] == "strict"
    assert one(["营业收入增速"], ["营业收入同比增速"], FuzzyMatcher(threshold=0.8))["verdict"] == "fail"


def test_fuzzy_containment_needs_two_characters():
    assert one(["毛利率"], ["销售毛利率"], FuzzyMatcher(threshold=0.95))["n_hits"] == 1
    assert one(["率"], ["毛利率"], FuzzyMatcher(threshold=0.95))["n_hits"] == 0


def test_fuzzy_normalises_width_and_case():
    assert normalise("Ｒ Ｏ Ｅ") == "roe"
    r = one(["ROE"], ["ｒｏｅ"], FuzzyMatcher())
    assert (r["n_hits"], r["exact_hits"]) == (1, 0)  # a hit, but not an exact-name hit


def test_fuzzy_assignment_is_optimal_not_greedy():
    # Greedy in gold order would give 净利润 the first candidate and leave 归母净利润 without a match.
    r = one(["净利润", "归母净利润"], ["归母净利润", "净利润增速"], FuzzyMatcher())
    assert r["verdict"] == "strict"
    assert sorted((h["gold"], h["pred"]) for h in r["hits"]) == [("净利润", "净利润增速"), ("归母净利润", "归母净利润")]


def _brute_max_hits(gold: list[str], pred: list[str], m: FuzzyMatcher) -> int:
    """Maximum one-to-one matching by exhaustive search (cases hold at most 4 x 4 names)."""
    from rapidfuzz.distance import Levenshtein

    def ok(g: str, p: str) -> bool:
        a, b = normalise(g), normalise(p)
        contained = (a in b or b in a) and min(len(a), len(b)) >= m.min_contained
        return a == b or Levenshtein.normalized_similarity(a, b) >= m.threshold or contained

    def rec(i: int, used: frozenset) -> int:
        if i == len(gold):
            return 0
        best = rec(i + 1, used)
        for j, p in enumerate(pred):
            if j not in used and ok(gold[i], p):
                best = max(best, 1 + rec(i + 1, used | {j}))
        return best

    return rec(0, frozenset())


def test_fuzzy_gets_the_maximum_number_of_hits_on_random_cases():
    rng = random.Random(3)
    pool = ["净利润", "归母净利润", "净利润增速", "利润率", "毛利率", "销售毛利率", "营业收入", "营业收入增速", "营收", "ROE"]
    gold = [rng.sample(pool, rng.randint(0, 4)) for _ in range(400)]
    pred = [[rng.choice(pool) for _ in range(rng.randint(0, 4))] for _ in range(400)]
    m = FuzzyMatcher()
    stats = MatchStats()
    df = run(gold, pred, m, stats=stats)
    assert stats.looped_cases > 20
    for i, (g, p) in enumerate(zip(gold, pred)):
        assert df["n_hits"][i] == _brute_max_hits(g, p, m), (g, p)


# ----------------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def use() -> UseEmbedder:
    return UseEmbedder(progress=False)


def test_use_default_embeds_chinese_metric_names(use: UseEmbedder):
    v = use.embed(["投资活动现金流", "投资活动净现金流", "月活跃用户数", "拨备覆盖率"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] == pytest.approx(0.97, abs=0.02)
    assert v[0] @ v[2] < 0.5 and v[0] @ v[3] < 0.5 and v[2] @ v[3] < 0.5


def test_embedding_matcher_hits_paraphrases_and_caches(use: UseEmbedder, tmp_path: Path):
    m = EmbeddingMatcher(use, threshold=0.9)
    r = one(["投资活动现金流", "月活跃用户数"], ["投资活动净现金流", "拨备覆盖率"], m)
    assert [(h["gold"], h["pred"]) for h in r["hits"]] == [("投资活动现金流", "投资活动净现金流")]
    assert r["verdict"] == "fail"

    class Counting(UseEmbedder):
        key = "test-counting-use"  # its own memory cache
        calls: list[int] = []

        def _encode(self, texts):
            self.calls.append(len(texts))
            return super()._encode(texts)

    e = Counting(cache_dir=tmp_path, progress=False)
    e.embed(["毛利率", "净利率", "毛利率"])
    e.embed(["净利率", "毛利率"])
    assert Counting.calls == [2]  # each distinct name once
    from reportminer.evalkit import embed as embed_mod

    embed_mod._MEMORY.pop("test-counting-use")
    again = Counting(cache_dir=tmp_path, progress=False)  # a new process: the disk cache answers
    v = again.embed(["毛利率"])
    assert Counting.calls == [2] and v.shape == (1, 512)
    assert list(tmp_path.glob("emb-*.npz"))


def test_make_matcher_rejects_threshold_for_upstream():
    with pytest.raises(ValueError, match="fixed protocol"):
        make_matcher("upstream", threshold=0.5)
    with pytest.raises(ValueError, match="unknown matcher"):
        make_matcher("cosine")


def test_sentence_transformers_model_from_a_local_folder(tiny_model: Path, tmp_path: Path):
    """Any sentence-transformers folder works; built here from the tiny Qwen3 (no hub)."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer import modules
    tr = modules.Transformer(str(tiny_model))
    folder = tmp_path / "st-model"
    st.SentenceTransformer(modules=[tr, modules.Pooling(tr.get_embedding_dimension(), "mean")], device="cpu").save(str(folder))
    e = load_embedder(str(folder), cache_dir=tmp_path / "cache", progress=False)
    v = e.embed(["毛利率", "净利润", "毛利率"])
    assert v.shape[0] == 3 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[2] == pytest.approx(1.0, abs=1e-5)
    r = one(["毛利率"], ["毛利率", "净利润"], EmbeddingMatcher(e, threshold=0.999))
    assert r["n_hits"] == 1 and r["verdict"] == "loose"
    with pytest.raises(Exception, match="local sentence-transformers folder"):
        load_embedder(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- difflib (the seed script)


def test_difflib_takes_the_first_eligible_prediction_not_the_best():
    from reportminer.evalkit.matchers import DifflibMatcher

    r = one(["净利润"], ["净利润增速", "净利润"], DifflibMatcher())
    assert [(h["gold"], h["pred"]) for h in r["hits"]] == [("净利润", "净利润增速")]  # contained, and first
    assert r["verdict"] == "loose"
    r = one(["净利润", "归母净利润"], ["归母净利润", "净利润"], DifflibMatcher())
    assert [(h["gold"], h["pred"]) for h in r["hits"]] == [("净利润", "归母净利润"), ("归母净利润", "净利润")]


def test_difflib_containment_of_one_character_and_the_threshold_edge():
    from reportminer.evalkit.matchers import DifflibMatcher, difflib_ratio

    assert one(["率"], ["毛利率"], DifflibMatcher())["n_hits"] == 1  # the seed script's rule: any containment
    # 7 matching characters of 9 + 11: ratio exactly 0.7 is a hit (a float32 bound once put it below 0.7)
    assert difflib_ratio("硅碳负极出货量增速", "人造石墨负极出货量增速") == 0.7
    assert one(["硅碳负极出货量增速"], ["人造石墨负极出货量增速"], DifflibMatcher())["n_hits"] == 1
    assert one(["硅碳负极出货量增速"], ["人造石墨负极出货量增速"], DifflibMatcher(threshold=0.71))["n_hits"] == 0
    r = one(["毛利率"], ["销售毛利率"], DifflibMatcher())
    assert r["hits"][0]["score"] == pytest.approx(difflib_ratio("毛利率", "销售毛利率"))  # 2*3/8


def test_difflib_matcher_equals_the_plain_python_rule_on_random_cases():
    from reportminer.evalkit.matchers import DifflibMatcher, difflib_reference

    rng = random.Random(1)
    alpha = "营业收入净利润毛率现金流"

    def name() -> str:
        return "".join(rng.choice(alpha) for _ in range(rng.randint(1, 7)))

    gold = [[name() for _ in range(rng.randint(0, 4))] for _ in range(3000)]
    pred = [[name() for _ in range(rng.randint(0, 5))] for _ in range(3000)]
    stats = MatchStats()
    cases = run(gold, pred, DifflibMatcher(), stats=stats)
    assert stats.looped_cases > 50  # the collision loop is exercised, not only the column path
    for row, g, p in zip(cases.iter_rows(named=True), gold, pred):
        want = [(g[a], p[b]) for a, b in difflib_reference(g, p)]
        assert [(h["gold"], h["pred"]) for h in row["hits"]] == want, (g, p)


def test_evalkit_difflib_equals_the_seed_scripts_way_end_to_end(repo_root: Path, tmp_path: Path):
    """The benchmark's pair of JSONL files (seed rows, perturbed names), scored by `evalkit score
    --matcher difflib` and by the re-implemented seed script: identical counts, P, R, F1, type accuracy."""
    import importlib.util

    from reportminer.evalkit.score import score_paths

    spec = importlib.util.spec_from_file_location("bench_evalkit", repo_root / "scripts" / "bench_evalkit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    gold_seed, _ = bench.seed_gold()
    gold, preds = bench.build(gold_seed, 3000, 5)
    gp, pp = bench.write_pair(bench.seed_rows_json(), gold, preds, tmp_path)
    ref = bench.seed_way(gp, pp)
    (res,) = score_paths(gp, pp, make_matcher("difflib"))
    s = res.summary
    assert {k: s[k] for k in ("gold_total", "pred_total", "hits", "type_correct")} == {
        k: ref[k] for k in ("gold_total", "pred_total", "hits", "type_correct")}
    for k in ("precision", "recall", "f1", "type_accuracy"):
        assert s[k] == pytest.approx(ref[k], abs=1e-12)
    assert 0.6 < s["f1"] < 0.95 and s["fuzzy_hits"] > 100  # perturbed: neither trivial nor hopeless
