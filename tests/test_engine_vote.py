"""Self-consistency vote and score threshold as pure functions: hand-made answers -> voted set (no vLLM)."""
from __future__ import annotations

import pytest

from reportminer.data.names import normalise_name, same_metric
from reportminer.data.schema import Extraction
from reportminer.engine.vote import split_by_threshold, vote


def ans(*metrics, analysis="a"):
    """An Extraction from (name, type, score) triples."""
    return Extraction.from_dict({"analysis": analysis, "metrics": [
        {"metric_name": n, "metric_type": t, "score": s, "reason": f"r-{n}"} for n, t, s in metrics]})


F, B = "financial", "business"


def names(v):
    return [m["metric_name"] for m in v.metrics]


def test_name_matching_rule():
    assert normalise_name(" ＲＯＥ ") == "roe" and same_metric("ROE", "ｒｏｅ")
    assert same_metric("毛利率", "综合毛利率") and same_metric("综合 毛利率", "毛利率")
    assert not same_metric("率", "毛利率")  # the shorter name needs two characters
    assert not same_metric("营业收入", "净利润") and not same_metric("", "")


def test_majority_keeps_metrics_named_by_half_or_more():
    v = vote([ans(("营业收入", F, 0.9), ("净利润", F, 0.8)),
              ans(("营业收入", F, 0.7)),
              ans(("营业收入", F, 0.8), ("订单量", B, 0.6))])
    assert names(v) == ["营业收入"]
    assert v.metrics[0]["agreement"] == 1.0 and v.metrics[0]["score"] == pytest.approx(0.8)
    assert (v.valid, v.total) == (3, 3)
    # Sample 1 names exactly the voted set (no extra metric): it gives the analysis.
    assert v.chosen == 1
    v2 = vote([ans(("营业收入", F, 0.9), ("净利润", F, 0.8)), ans(("营业收入", F, 0.7), ("净利润", F, 0.9)),
               ans(("营业收入", F, 0.8))])
    assert names(v2) == ["营业收入", "净利润"]
    assert [m["agreement"] for m in v2.metrics] == [1.0, pytest.approx(2 / 3)]
    assert v2.chosen == 0  # ties on fit: lowest index


def test_matched_forms_vote_on_name_and_type_ties_go_to_the_earliest():
    v = vote([ans(("毛利率", F, 0.9)), ans(("综合毛利率", F, 0.8)), ans(("综合毛利率", B, 0.7))])
    assert names(v) == ["综合毛利率"] and v.metrics[0]["agreement"] == 1.0
    assert v.metrics[0]["metric_type"] == F  # F, F, B
    tie = vote([ans(("毛利率", B, 0.9)), ans(("综合毛利率", F, 0.8))])
    assert names(tie) == ["毛利率"] and tie.metrics[0]["metric_type"] == B  # 1:1, sample 0's forms


def test_invalid_samples_are_ignored_and_all_invalid_is_none():
    v = vote([None, ans(("ROE", F, 0.9)), ans(("ｒｏｅ", F, 0.7)), None])
    assert (v.valid, v.total, v.chosen) == (2, 4, 1) and names(v) == ["ROE"]
    assert v.metrics[0]["agreement"] == 1.0
    assert vote([None, None]) is None


def test_empty_answers_can_win():
    v = vote([ans(analysis="none"), ans(analysis="none2"), ans(("营业收入", F, 0.9), analysis="one")])
    assert v.metrics == [] and v.analysis == "none"


def test_one_sample_is_that_sample():
    a = ans(("营业收入", F, 0.9), ("净利润", F, 0.85), analysis="x")
    v = vote([a])
    assert v.analysis == "x" and names(v) == ["营业收入", "净利润"]
    assert [m["score"] for m in v.metrics] == [0.9, 0.85] and {m["agreement"] for m in v.metrics} == {1.0}
    assert [m["reason"] for m in v.metrics] == ["r-营业收入", "r-净利润"]


def test_order_is_agreement_then_the_chosen_answers_order_and_the_cap_is_four():
    many = [("A1", F, 0.9), ("B2", F, 0.8), ("C3", F, 0.7), ("D4", F, 0.6)]
    v = vote([ans(*many), ans(*many[::-1]), ans(("E5", F, 0.99), ("D4", F, 0.6))], threshold=0.3)
    # D4 agreement 1, the rest 2/3 (E5 1/3, kept at threshold 0.3 but the cap of four drops it).
    assert names(v) == ["D4", "A1", "B2", "C3"]
    assert len(vote([ans(*many), ans(("E5", F, 0.9))], threshold=0.5).metrics) == 4


def test_threshold_fraction_and_one_metric_per_sample_per_cluster():
    # One sample naming both 毛利率 and 综合毛利率 gives two clusters, each counted once per sample.
    v = vote([ans(("毛利率", F, 0.9), ("综合毛利率", F, 0.9)), ans(("毛利率", F, 0.9)), ans(("综合毛利率", F, 0.8))],
             threshold=2 / 3)
    assert sorted(names(v)) == ["毛利率", "综合毛利率"]
    assert all(m["agreement"] == pytest.approx(2 / 3) for m in v.metrics)
    assert vote([ans(("X1", F, 0.9)), ans(("Y2", F, 0.9)), ans(("Z3", F, 0.9))]).metrics == []


def test_split_by_threshold():
    ms = [{"metric_name": "a", "score": 0.9, "agreement": 1 / 3}, {"metric_name": "b", "score": 0.5, "agreement": 1.0}]
    assert split_by_threshold(ms, None, "score") == (ms, [])
    kept, dropped = split_by_threshold(ms, 0.6, "score")
    assert [m["metric_name"] for m in kept] == ["a"] and [m["metric_name"] for m in dropped] == ["b"]
    kept, dropped = split_by_threshold(ms, 2 / 3, "agreement")
    assert [m["metric_name"] for m in kept] == ["b"] and [m["metric_name"] for m in dropped] == ["a"]
    assert split_by_threshold(ms, 0.0, "score") == (ms, [])


# ---- settings, manifest and refusals (no engine) ----------------------------------------------------


def test_decoding_settings_are_validated(tiny_model, tiny_adapter, tiny_adapter_b):
    from reportminer.engine.config import ConfigError, EngineConfig

    base = EngineConfig(model=str(tiny_model), adapters={"a": str(tiny_adapter)})
    for bad, msg in (({"samples": 0}, "samples"), ({"vote_threshold": 0}, "vote_threshold"),
                     ({"score_threshold": 1.5}, "score_threshold"), ({"sample_temperature": 0}, "sample_temperature"),
                     ({"merge_adapter": True, "include_base": True}, "merge_adapter"),
                     ({"merge_adapter": True, "adapters": {"a": str(tiny_adapter), "b": str(tiny_adapter_b)}},
                      "exactly one adapter")):
        with pytest.raises(ConfigError, match=msg):
            base.override(**bad).resolve()
    from reportminer.engine.decoding import sampling_temperature

    assert sampling_temperature(base.override(samples=3)) == 0.7
    assert sampling_temperature(base.override(samples=3, temperature=0.3)) == 0.3
    assert sampling_temperature(base) == 0.0


def test_merge_adapter_with_two_adapters_is_refused_before_the_engine_starts(tiny_model, tiny_adapter, tiny_adapter_b,
                                                                              tmp_path):
    from click.testing import CliRunner

    from reportminer.engine.cli import main

    (tmp_path / "in").mkdir()
    r = CliRunner().invoke(main, ["run", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                  "--model", str(tiny_model), "--adapter", f"a={tiny_adapter}",
                                  "--adapter", f"b={tiny_adapter_b}", "--merge-adapter", "-q"])
    assert r.exit_code == 2, r.output
    assert "refused, nothing ran" in r.output and "merge_adapter" in r.output
    assert not (tmp_path / "out").exists()


def test_manifest_decoding_is_optional_and_its_threshold_needs_the_same_sample_count(tiny_model, tmp_path):
    from reportminer.data.manifest import AdapterManifest, base_model_fingerprint
    from reportminer.engine.adapters import Adapter
    from reportminer.engine.config import EngineConfig
    from reportminer.engine.decoding import adapter_thresholds

    old = {"base_model": base_model_fingerprint(tiny_model), "schema_version": "x", "prompt_version": "y"}
    (tmp_path / "reportminer_adapter.json").write_text(__import__("json").dumps(old))
    assert AdapterManifest.read(tmp_path).decoding is None  # manifests written before `decoding` still load
    a = [Adapter("a", tmp_path, 8, "0" * 16)]
    cfg = EngineConfig(model=str(tiny_model), adapters={"a": str(tmp_path)})
    assert adapter_thresholds(cfg, a) == ({"a": None}, [])
    m = AdapterManifest.read(tmp_path)
    m.decoding = {"score_threshold": 0.4, "samples": 3}
    m.write(tmp_path)
    assert adapter_thresholds(cfg.override(samples=3), a) == ({"a": 0.4}, [])
    t, warnings = adapter_thresholds(cfg, a)
    assert t == {"a": None} and "calibrated with samples=3" in warnings[0]
    assert adapter_thresholds(cfg.override(score_threshold=0.9), a) == ({"a": 0.9}, [])
    assert adapter_thresholds(cfg.override(score_threshold=0.9, include_base=True), a)[0] == {"base": 0.9, "a": 0.9}


def test_a_repeated_name_and_a_threshold_both_land_in_dropped_metrics(tiny_model):
    """row_from_completion: the repeat that rows.result_from_text removed and the metrics under the threshold are
    both recorded, with the agreement every metric of a greedy row carries."""
    from reportminer.engine.config import EngineConfig
    from reportminer.engine.decoding import row_from_completion
    from reportminer.engine.seam import Completion

    text = ('{"analysis":"","metrics":[{"metric_name":"x","metric_type":"financial","score":0.95,"reason":""},'
            '{"metric_name":"y","metric_type":"business","score":0.4,"reason":""},'
            '{"metric_name":"x","metric_type":"financial","score":0.9,"reason":""}]}')
    c = EngineConfig(model=str(tiny_model))
    r = row_from_completion("a", Completion(key=0, text=text, finish_reason="stop", prompt_tokens=1, output_tokens=1),
                            c, 0.8)
    assert r.status == "ok" and [m["metric_name"] for m in r.metrics] == ["x"]
    assert [(m["metric_name"], m["score"], m["agreement"]) for m in r.dropped_metrics] == [("x", 0.9, 1.0), ("y", 0.4, 1.0)]
    none = row_from_completion("a", Completion(key=0, text=text, finish_reason="stop", prompt_tokens=1, output_tokens=1),
                               c, None)
    assert [m["metric_name"] for m in none.metrics] == ["x", "y"] and [m["score"] for m in none.dropped_metrics] == [0.9]
