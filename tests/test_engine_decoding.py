"""Decoding levers with the real vLLM CPU engine on the tiny random Qwen3 and a real LoRA adapter:
self-consistency (`samples`), `score_threshold` (config and adapter manifest), merged-adapter mode.

The random model writes random text inside the guided JSON, so what is checked is plumbing and
arithmetic (every row once, agreement values, what is dropped and recorded), not answer quality.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import pytest

from reportminer.data.io import jsonl_to_table, read_table, write_parquet
from reportminer.data.manifest import AdapterManifest, base_model_fingerprint
from reportminer.data.parse import parse_keeping_first, parse_output
from reportminer.engine import Engine, EngineConfig
from reportminer.engine import merge as merge_mod
from reportminer.engine.merge import merged_model, serving_config
from reportminer.engine.runner import ConfigMismatch, run

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"
# Long enough that the random model finishes answers with metrics: with prompt v3, adapter b finishes all 12
# demo rows greedily at 256 tokens, 4 of them with metrics (adapter a: 9 and none; at 512, 11 and 2). Under
# prompt v2 adapter a did better (11 and 5): the random answers change with every prompt change.
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def cfg(tiny_model, tiny_adapter_b) -> EngineConfig:
    return EngineConfig(model=str(tiny_model), adapters={"lora": str(tiny_adapter_b)}, max_model_len=2048,
                        kv_cache_memory_bytes="512MiB", max_num_seqs=64, max_tokens=MAX_TOKENS, max_loras=2)


@pytest.fixture(scope="module")
def eng(cfg):
    e = Engine.start(cfg)
    yield e
    e.close()


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("rows") / "demo.parquet"
    write_parquet(jsonl_to_table(DEMO), p)
    return p


@pytest.fixture(scope="module")
def greedy(eng, cfg, six, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("greedy")
    run(cfg, six, out, engine=eng, progress=False)
    return {r["id"]: r for r in read_table(out).to_pylist()}


def _plain(metrics):
    return [{k: v for k, v in m.items() if k not in ("agreement", "spans", "grounded")} for m in metrics]


def _answered(metrics):
    """The metrics as the model and the vote gave them: without the grounding added when rows are written."""
    return [{k: v for k, v in m.items() if k not in ("spans", "grounded")} for m in metrics]


def test_samples_one_is_the_single_answer(greedy):
    rows = list(greedy.values())
    assert len(rows) == 12 and "raw_samples" not in rows[0]
    assert any(r["status"] == "ok" for r in rows) and any(r["metrics"] for r in rows), "some answers should finish"
    for r in rows:
        assert r["dropped_metrics"] is None
        if r["status"] == "ok":
            assert r["samples"] == {"valid": 1, "total": 1}
            # Exactly the parsed single answer, plus agreement 1.0.
            assert _plain(r["metrics"]) == parse_output(r["raw"]).extraction.to_dict()["metrics"]
            assert all(m["agreement"] == 1.0 for m in r["metrics"])
        else:
            assert r["samples"] == {"valid": 0, "total": 1} and r["metrics"] is None


def test_three_samples_vote_and_record_agreement(eng, cfg, six, tmp_path):
    from reportminer.engine.vote import vote

    out = tmp_path / "s3"
    # A vote threshold of 1/3 keeps every metric any sample named, so all agreement values show.
    s = run(cfg.override(samples=3, vote_threshold=1 / 3), six, out, engine=eng, progress=False)
    rows = read_table(out).to_pylist()
    assert Counter(r["id"] for r in rows) == Counter(jsonl_to_table(DEMO).column("id").to_pylist())
    assert s.output_rows == 12
    seen = set()
    for r in rows:
        assert r["samples"]["total"] == 3 and len(r["raw_samples"]) == 3
        # Each sample read as the engine reads it: a repeated name keeps its first metric (data.parse), so a
        # sample whose only breach is a repeat is valid and votes (a temperature-0.7 sample can repeat a name).
        parsed = [parse_keeping_first(t)[0] for t in r["raw_samples"]]
        answers = [p.extraction if p.ok else None for p in parsed]
        if r["status"] != "ok":
            assert r["samples"]["valid"] == 0 and r["error"].startswith(("length", "schema"))
            continue
        v = r["samples"]["valid"]
        assert r["raw"] in r["raw_samples"] and parse_keeping_first(r["raw"])[0].ok
        # The row is the pure vote over its own valid samples. A sample can parse and still be invalid: one that
        # closed its JSON on exactly its max_tokens-th token finished "length", which the engine counts as cut
        # (engine.rows.result_from_text), and sample finish reasons are not in the output. So the row must be the
        # vote over v of the parsed samples (all of them when none was cut; a CI run on 2026-12-07 had one cut).
        parsed_ok = [i for i, a in enumerate(answers) if a is not None]
        assert v <= len(parsed_ok)
        subsets = [[a if i in keep else None for i, a in enumerate(answers)] for keep in combinations(parsed_ok, v)]
        match = [sub for sub in subsets if _answered(r["metrics"]) == vote(sub, 1 / 3).metrics]
        assert match, (r["id"], v, len(parsed_ok))
        for m in r["metrics"]:
            a = Fraction(m["agreement"]).limit_denominator(3)
            assert 0 < a <= 1 and a * v == int(a * v), (m, v)  # k of the v valid samples
            if v == 3:
                seen.add(a)
        # The default majority (0.5) keeps exactly the metrics at least half the valid samples name.
        assert any([m["metric_name"] for m in vote(sub).metrics] ==
                   [m["metric_name"] for m in r["metrics"] if m["agreement"] >= 0.5] for sub in match)
    assert seen <= {Fraction(1, 3), Fraction(2, 3), Fraction(1)}
    assert any(r["samples"]["valid"] for r in rows), "some sampled answers should finish"
    m = json.loads((out / "_engine_manifest.json").read_text())
    assert m["identity"]["decoding"]["samples"] == 3 and m["identity"]["decoding"]["temperature"] == 0.7
    with pytest.raises(ConfigMismatch, match="decoding"):
        run(cfg, six, out, engine=eng, progress=False)
    print("agreement values seen (3 valid samples):", sorted(seen))
    # evalkit reads the results as before: the extra struct field and columns are ignored.
    from reportminer.evalkit.loaders import load_gold, load_predictions

    (ps,) = load_predictions(out, load_gold(DEMO))
    names = {i: n for i, n in ps.frame.select("id", "pred_names").iter_rows()}
    assert all(names[r["id"]] == [m["metric_name"] for m in r["metrics"]] for r in rows if r["status"] == "ok")


def _threshold(greedy) -> float:
    scores = sorted(m["score"] for r in greedy.values() for m in (r["metrics"] or []))
    assert len(scores) >= 2, "the greedy run should yield a few metrics"
    return (scores[0] + scores[-1]) / 2 if scores[0] < scores[-1] else scores[0] + 1e-6


def _check_split(rows, greedy, t, applied=True):
    for r in rows:
        g = greedy[r["id"]]
        assert r["raw"] == g["raw"]  # greedy: the same answer, only the threshold differs
        if r["status"] != "ok":
            assert r["dropped_metrics"] is None
            continue
        if not applied:
            assert r["metrics"] == g["metrics"] and r["dropped_metrics"] in (None, [])
            continue
        assert all(m["score"] >= t for m in r["metrics"]) and all(m["score"] < t for m in r["dropped_metrics"])
        assert sorted(_plain(r["metrics"] + r["dropped_metrics"]), key=str) == sorted(_plain(g["metrics"]), key=str)


def test_score_threshold_drops_and_records(eng, cfg, six, greedy, tmp_path):
    t = _threshold(greedy)
    run(cfg.override(score_threshold=t), six, tmp_path / "t", engine=eng, progress=False)
    rows = read_table(tmp_path / "t").to_pylist()
    _check_split(rows, greedy, t)
    assert sum(len(r["dropped_metrics"] or []) for r in rows) >= 1


def test_manifest_threshold_is_the_default_and_config_overrides_it(eng, cfg, six, greedy, tiny_model, tiny_adapter_b,
                                                                    tmp_path):
    t = _threshold(greedy)
    ad = tmp_path / "calibrated"
    shutil.copytree(tiny_adapter_b, ad)
    AdapterManifest(base_model=base_model_fingerprint(tiny_model),
                    decoding={"score_threshold": t, "samples": 1, "calibrated_on": "test"}).write(ad)
    c = cfg.override(adapters={"lora": str(ad)})
    s = run(c, six, tmp_path / "m", engine=eng, progress=False)
    assert not s.warnings
    _check_split(read_table(tmp_path / "m").to_pylist(), greedy, t)
    m = json.loads((tmp_path / "m" / "_engine_manifest.json").read_text())
    assert m["identity"]["decoding"]["score_threshold"] == {"lora": t}
    run(c.override(score_threshold=0.0), six, tmp_path / "off", engine=eng, progress=False)
    _check_split(read_table(tmp_path / "off").to_pylist(), greedy, 0.0, applied=False)


def test_the_adapters_type_prior_retypes_its_answers_and_can_be_turned_off(eng, cfg, six, greedy, tiny_adapter_b,
                                                                            tmp_path):
    """A type_prior.json beside the adapter retypes the metrics it is sure of (the engine's answers, not the
    prior's own test data: the prior is made to contradict the greedy run's types for every name it answered)."""
    from reportminer.data.type_prior import PRIOR_NAME, TypePrior, build_type_prior

    flip = {"financial": "business", "business": "financial"}
    answered = [(m["metric_name"], m["metric_type"]) for r in greedy.values() for m in (r["metrics"] or [])]
    assert answered, "the greedy run answered no metric to retype"
    prior = build_type_prior([(n, flip[t]) for n, t in answered for _ in range(3)])
    ad = tmp_path / "with-prior"
    shutil.copytree(tiny_adapter_b, ad)
    prior.write(ad)
    assert TypePrior.read(ad) is not None and (ad / PRIOR_NAME).exists()
    c = cfg.override(adapters={"lora": str(ad)})

    summary = run(c, six, tmp_path / "p", engine=eng, progress=False)
    rows = {r["id"]: r for r in read_table(tmp_path / "p").to_pylist()}
    retyped = 0
    for rid, g in greedy.items():
        r = rows[rid]
        assert r["raw"] == g["raw"] and r["status"] == g["status"]  # the same answers, the model's text kept
        for m, gm in zip(r["metrics"] or [], g["metrics"] or []):
            assert m["metric_name"] == gm["metric_name"] and m["score"] == gm["score"]
            want = prior.type_of(gm["metric_name"]) or gm["metric_type"]
            assert m["metric_type"] == want
            retyped += m["metric_type"] != gm["metric_type"]
    assert retyped >= 1 and summary.by_adapter["lora"]["retyped_metrics"] == retyped
    ident = json.loads((tmp_path / "p" / "_engine_manifest.json").read_text())["identity"]["decoding"]
    assert ident["type_prior"] == {"lora": prior.sha256()}

    run(c.override(type_prior=False), six, tmp_path / "off", engine=eng, progress=False)
    off = {r["id"]: r for r in read_table(tmp_path / "off").to_pylist()}
    assert {k: _plain(v["metrics"] or []) for k, v in off.items()} == {k: _plain(v["metrics"] or [])
                                                                        for k, v in greedy.items()}
    ident = json.loads((tmp_path / "off" / "_engine_manifest.json").read_text())["identity"]["decoding"]
    assert "type_prior" not in ident


def test_an_uncapped_grammar_lets_strings_pass_their_cap_and_the_capped_retry_gives_the_capped_rows(
        eng, cfg, six, greedy, tmp_path):
    """guided_length_caps on the started engine (a per-request setting: the same engine serves both ways). The
    random model fills strings to whatever the grammar allows: with the caps no metric_name passes 24
    characters; the uncapped grammar alone (the feeder without its retry) lets some pass; and a run with the
    default (no caps in the grammar) decodes exactly those answers again under the capped grammar, so its rows
    are the capped run's, which is seam.needs_capped_retry's argument. Fails if the setting does not reach the
    grammar (nothing passes a cap) or the retry is not wired (rows differ, errors)."""
    import re

    from reportminer.data.schema import MAX_NAME_CHARS
    from reportminer.engine.adapters import load_adapters, read_adapters
    from reportminer.engine.seam import Request, needs_capped_retry

    def names(raw):  # metric_name strings, the last one possibly unterminated (an answer cut at max_tokens)
        return [json.loads(f'"{n}"') if n.count("\\") % 2 == 0 and not n.endswith("\\") else n
                for n in re.findall(r'"metric_name":"((?:[^"\\]|\\.)*)', raw or "")]

    assert cfg.guided_length_caps is False  # the default
    run(cfg.override(guided_length_caps=True), six, tmp_path / "capped", engine=eng, progress=False)
    capped = {r["id"]: r for r in read_table(tmp_path / "capped").to_pylist()}
    assert all(len(n) <= MAX_NAME_CHARS for r in capped.values() for n in names(r["raw"]))

    rows_in = read_table(six).to_pylist()
    ids = eng.encode_prompts([r.get("chapter_title") for r in rows_in], [r["paragraph"] for r in rows_in])
    (adapter,), _ = load_adapters(read_adapters(cfg.adapters), cfg.model)
    eng.reset_loras()
    bare = list(eng.feeder(eng.sampling_params(cfg), window=64).run(
        iter([Request(r["id"], i, adapter) for r, i in zip(rows_in, ids)])))
    over = {c.key for c in bare if any(len(n) > MAX_NAME_CHARS for n in names(c.text))}
    assert over, [c.text[:120] for c in bare]
    redo = {c.key for c in bare if needs_capped_retry(c)}
    assert over <= redo

    run(cfg, six, tmp_path / "default", engine=eng, progress=False)
    rows = {r["id"]: r for r in read_table(tmp_path / "default").to_pylist()}
    same = {k: (r["status"], r["raw"]) for k, r in capped.items()}
    assert {k: (r["status"], r["raw"]) for k, r in rows.items()} == same
    assert {k: (r["status"], r["raw"]) for k, r in greedy.items()} == same
    summary = json.loads((tmp_path / "default" / "_engine_summary.json").read_text())
    assert summary["capped_retries"] == len(redo)


def test_merged_adapter_equals_lora_and_the_merge_is_cached(eng, cfg, tmp_path, monkeypatch):
    """Runs last in this module: it closes the module's engine to start others in the same process.

    Compared in float32 (LoRA path and merged weights both float32, eager): in bf16 the merged weight is
    rounded once while the LoRA path adds its low-rank term per step in bf16, and on this random model's
    near-tied logits that alone changed 3 of 12 answers (measured); float32 leaves only summation order.
    """
    eng.close()
    rows_in = tmp_path / "in.parquet"
    write_parquet(jsonl_to_table(DEMO), rows_in)
    c = cfg.override(max_tokens=32, dtype="float32", enforce_eager=True)
    lora_eng = Engine.start(c)
    try:
        run(c, rows_in, tmp_path / "lora", engine=lora_eng, progress=False)
    finally:
        lora_eng.close()
    lora = {r["id"]: r for r in read_table(tmp_path / "lora").to_pylist()}

    monkeypatch.setattr(merge_mod, "merged_root", lambda: tmp_path / "cache" / "merged")
    from reportminer.engine.adapters import load_adapters

    (adapter,), _ = load_adapters(c.adapters, c.model)
    folder, built = merged_model(c.model, adapter, "float32")
    assert built and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary folder left"

    def no_merge(*a, **k):
        raise AssertionError("the cached merge should be reused")

    monkeypatch.setattr(merge_mod, "merge_into", no_merge)
    mc = c.override(merge_adapter=True)
    merged_eng = Engine.start(serving_config(mc.resolve(), folder))
    try:
        assert not merged_eng.config.max_loras  # no LoRA in the served engine
        s = run(mc, rows_in, tmp_path / "merged", engine=merged_eng, progress=False)  # reuses the cached folder
    finally:
        merged_eng.close()
    merged = {r["id"]: r for r in read_table(tmp_path / "merged").to_pylist()}
    assert s.adapter_columns == ["lora"] and {r["adapter"] for r in merged.values()} == {"lora"}
    same = sum(merged[i]["raw"] == lora[i]["raw"] for i in lora)
    print(f"merged vs LoRA (float32): {same}/{len(lora)} identical answers")
    assert same >= 0.9 * len(lora), f"{same}/{len(lora)} identical"
    ident = json.loads((tmp_path / "merged" / "_engine_manifest.json").read_text())["identity"]
    assert ident["decoding"]["merge_adapter"] is True and ident["adapters"][0]["name"] == "lora"


def test_merge_matches_peft(tiny_model, tiny_adapter_b, tmp_path):
    """The merge arithmetic against peft's own merge_and_unload, where peft is installed (trainer env)."""
    peft = pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from reportminer.engine.merge import merge_into

    merge_into(Path(tiny_model), Path(tiny_adapter_b), tmp_path, "float32")
    mine = load_file(str(tmp_path / "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    ref = peft.PeftModel.from_pretrained(base, str(tiny_adapter_b)).merge_and_unload().state_dict()
    for k, v in mine.items():
        assert torch.allclose(ref[k].float(), v.float(), atol=1e-5), k

