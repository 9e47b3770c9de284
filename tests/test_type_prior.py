"""The learned metric-type prior (data/type_prior.py): keys, decisions, storage, the trainer's CLI and the
engine's preflight. The engine applying it is in tests/test_engine_decoding.py (real vLLM)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.type_prior import PRIOR_NAME, TypePrior, build_type_prior, label_pairs, name_keys

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"
SEED = REPO.parent / "shared" / "seed" / "data"


def test_keys_are_the_name_then_its_endings_longest_first():
    assert name_keys("新业务价值率（NBVM）") == ["新业务价值率", "业务价值率", "务价值率", "价值率", "值率"]
    assert name_keys("ＲＯＥ") == ["roe", "oe"]  # NFKC folds full-width letters, case is folded
    assert name_keys("(ROE)") == ["(roe)", "roe)", "oe)", "e)"]  # a gloss is cut only after a name
    assert name_keys("  ") == []


def _prior(pairs, **kw):
    return build_type_prior(pairs, **kw)


def test_the_longest_ending_with_support_decides_and_a_mixed_one_decides_nothing():
    pairs = ([("资产负债率", "financial")] * 2 + [("净负债率", "financial")] * 2 + [("市占率", "business")] * 5
             + [("生猪完全成本", "business")] * 2 + [("吨煤完全成本", "financial")] * 2)
    p = _prior(pairs)
    # 负债率 (4 labelled, all financial) decides before 债率 or 率 (mostly business)
    assert p.type_of("公司资产负债率") == "financial"
    assert p.type_of("海外市占率") == "business"
    # 完全成本: 2 business, 2 financial -> no decision, the model's type stands
    assert p.type_of("矿产铜完全成本") is None
    assert p.type_of("出货量") is None  # nothing labelled like it
    # below min_support nothing decides
    assert _prior([("不良贷款率", "financial")] * 2).type_of("不良贷款率") is None
    # purity: 9 of 10 is enough at 0.9, 8 of 10 is not
    nine = [("毛利率", "financial")] * 9 + [("毛利率", "business")]
    assert _prior(nine).type_of("毛利率") == "financial"
    assert _prior(nine, min_purity=0.95).type_of("毛利率") is None


def test_apply_changes_only_the_type_and_counts_it():
    p = _prior([("拨备覆盖率", "financial")] * 3)
    ms = [{"metric_name": "拨备覆盖率", "metric_type": "business", "score": 0.9, "reason": "r", "agreement": 1.0},
          {"metric_name": "出货量", "metric_type": "business", "score": 0.8, "reason": "s", "agreement": 1.0}]
    out, n = p.apply(ms)
    assert n == 1
    assert out[0] == {**ms[0], "metric_type": "financial"} and out[1] == ms[1]
    assert ms[0]["metric_type"] == "business"  # the input is not modified


def test_write_read_roundtrip_and_refusals(tmp_path):
    p = _prior([("净息差", "financial")] * 4 + [("用户数", "business")] * 3)
    p.write(tmp_path)
    q = TypePrior.read(tmp_path)
    assert q == p and q.sha256() == p.sha256()
    assert TypePrior.read(tmp_path / "none") is None
    (tmp_path / PRIOR_NAME).write_text("{not json")
    with pytest.raises(DataError, match="unreadable type prior"):
        TypePrior.read(tmp_path)
    (tmp_path / PRIOR_NAME).write_text(json.dumps({**p.to_dict(), "counts": {"率": {"finance": 3}}}))
    with pytest.raises(DataError, match="unknown metric types"):
        TypePrior.read(tmp_path)


def test_label_pairs_reads_seed_outputs():
    rows = [json.loads(x) for x in DEMO.read_text(encoding="utf-8").splitlines() if x.strip()]
    pairs = list(label_pairs(r["output"] for r in rows))
    assert len(pairs) == sum(len(r["output"]["metrics"]) for r in rows) > 0


@pytest.mark.skipif(not SEED.is_dir(), reason="../shared/seed is absent: the seed's labels are not committed")
def test_on_the_seed_labels_statement_ratios_are_financial_and_unit_costs_undecided():
    rows = [json.loads(x) for f in sorted(SEED.glob("*.jsonl")) for x in f.read_text(encoding="utf-8").splitlines()
            if x.strip()]
    p = build_type_prior(label_pairs(r["output"] for r in rows))
    for name in ("不良贷款率", "拨备覆盖率", "资产负债率", "经营性现金流净额", "存货周转天数", "研发费用率"):
        assert p.type_of(name) == "financial", name
    for name in ("出货量", "市占率", "用户数"):
        assert p.type_of(name) == "business", name
    assert p.type_of("每头生猪完全成本") is None  # labelled both ways in the seed


def _adapter(tmp_path: Path) -> Path:
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    return d


def test_trainer_type_prior_command_writes_it(tmp_path):
    from reportminer.trainer.cli import main

    d = _adapter(tmp_path)
    res = CliRunner().invoke(main, ["type-prior", str(d), "--data", str(DEMO), "--min-support", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    p = TypePrior.read(d)
    assert p is not None and out["sha256"] == p.sha256() and out["keys"] == len(p.counts) > 0
    assert p.min_support == 1
    res = CliRunner().invoke(main, ["type-prior", str(tmp_path / "missing"), "--data", str(DEMO)])
    assert res.exit_code == 2 and "not a LoRA adapter folder" in res.output


def test_engine_preflight_refuses_a_corrupt_prior_naming_the_adapter(tmp_path):
    from reportminer.engine.preflight import check_adapters

    d = _adapter(tmp_path)
    (d / "adapter_model.bin").write_bytes(b"x")
    check_adapters({"a": str(d)}, None)  # no prior: fine
    (d / PRIOR_NAME).write_text("[]")
    with pytest.raises(ConfigError, match=r"adapter a=.*not a type prior"):
        check_adapters({"a": str(d)}, None)


def test_engine_retype_applies_the_prior_to_finished_results_and_keeps_everything_else(tmp_path):
    """`engine retype` (was scripts/retype_results.py): ok adapter rows retyped, base and error rows kept, nested
    shard paths kept, one JSON line; --prior and --data give the same prior."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from reportminer.data.type_prior import build_type_prior
    from reportminer.engine.cli import main

    labels = [{"output": {"metrics": [{"metric_name": n, "metric_type": "financial"}]}}
              for n in ("资产负债率", "净负债率", "有息负债率", "流动负债率")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels),
                                          encoding="utf-8")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    build_type_prior([(n, "financial") for n in ("资产负债率", "净负债率", "有息负债率", "流动负债率")]).write(adapter)
    wrong = [{"metric_name": "长期负债率", "metric_type": "business", "score": 0.9, "reason": "r"},
             {"metric_name": "门店数量", "metric_type": "business", "score": 0.8, "reason": "r"}]
    rows = [{"id": "1", "adapter": "v4", "status": "ok", "metrics": wrong, "raw": "x"},
            {"id": "1", "adapter": "base", "status": "ok", "metrics": wrong, "raw": "x"},
            {"id": "2", "adapter": "v4", "status": "error", "metrics": None, "raw": "y"}]
    (tmp_path / "res" / "a").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "res" / "a" / "s1.parquet")
    outs = {}
    for how, args in (("prior", ["--prior", str(adapter)]), ("data", ["--data", str(tmp_path / "train.jsonl")])):
        r = CliRunner().invoke(main, ["retype", str(tmp_path / "res"), str(tmp_path / how), *args])
        assert r.exit_code == 0, r.output
        outs[how] = json.loads(r.stdout)
        got = pq.read_table(tmp_path / how / "a" / "s1.parquet").to_pylist()
        assert [m["metric_type"] for m in got[0]["metrics"]] == ["financial", "business"]  # 负债率 decided, 门店数量 not
        assert got[1]["metrics"] == wrong and got[2] == rows[2] and got[0]["raw"] == "x"
    assert outs["prior"] == outs["data"] and outs["prior"]["retyped_metrics"] == {"v4": 1}
    r = CliRunner().invoke(main, ["retype", str(tmp_path / "res"), str(tmp_path / "x")])
    assert r.exit_code == 2 and "give exactly one of --data and --prior" in r.output
