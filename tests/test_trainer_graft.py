"""Training levers of issue 16 at the row level: extra training files (train split only) and grafted
background sentences (labels unchanged, one clause in the analysis, reproducible by seed). No model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reportminer.data.errors import ConfigError, DataError
from reportminer.data.io import file_sha256, iter_jsonl
from reportminer.data.schema import MAX_ANALYSIS_CHARS
from reportminer.trainer.config import DEFAULT_GRAFT_NOTE, build_config, parse_set
from reportminer.trainer.graft import background_pool, figures, graft_row, graft_rows, note_for, sentences
from reportminer.trainer.rows import LabelledRow, load_training_data

BG = "根据行业协会数据，2025年全国乘用车销量为2680万辆，同比增长4.5%。出口量为480万辆。展望2026年市场平稳。"


def metric(name: str) -> dict:
    return {"metric_name": name, "metric_type": "financial", "score": 0.9, "reason": "r"}


def row(i: int, para: str, names: list[str], analysis: str = "段落分析。") -> LabelledRow:
    return LabelledRow(source=f"x.jsonl:{i}", chapter_title="t", paragraph=para,
                       output={"analysis": analysis, "metrics": [metric(n) for n in names]}, scenario="A")


ROWS = [row(1, "公司毛利率提升至32%。主要受益于产品结构优化。费用率保持稳定。", ["毛利率"]),
        row(2, BG, []),
        row(3, "全年营收120亿元，同比增长15%。", ["营业收入"])]


def test_sentences_are_lossless_and_figures_keep_units() -> None:
    assert "".join(sentences(BG)) == BG and len(sentences(BG)) == 3
    assert sentences("无句号的结尾") == ["无句号的结尾"]
    assert figures("2025年全国乘用车销量为2680万辆，同比增长4.5%，提升0.3个百分点，达到4.5%。") == \
        ["2680万辆", "4.5%", "0.3个百分点"]  # dates are not figures to set aside
    assert figures("展望2025年下半年，3月起行业回暖，2019年为参照。") == []
    assert figures("CR4合计约55%，2025Q2订单7,500万单，5G基站12万个。") == ["55%", "7,500万", "12万个"]


def test_pool_is_the_figure_sentences_of_zero_metric_rows() -> None:
    pool = background_pool(ROWS)
    assert pool == ["根据行业协会数据，2025年全国乘用车销量为2680万辆，同比增长4.5%。", "出口量为480万辆。"]


def test_graft_inserts_one_sentence_at_a_boundary_and_names_its_figures() -> None:
    s = "出口量为480万辆。"
    for seed in range(20):
        g = graft_row(ROWS[0], s, random.Random(seed))
        assert g is not None
        assert g.paragraph.replace(s, "", 1) == ROWS[0].paragraph  # only the sentence was added
        at = g.paragraph.index(s)
        assert at > 0 and g.paragraph[at - 1] == "。"  # at a sentence boundary, never before the first sentence
        assert g.output["metrics"] == ROWS[0].output["metrics"]  # labels unchanged
        assert g.output["analysis"] == "段落分析。" + DEFAULT_GRAFT_NOTE.format(figures="480万辆")
        assert g.source == "x.jsonl:1+graft"
    assert ROWS[0].paragraph == "公司毛利率提升至32%。主要受益于产品结构优化。费用率保持稳定。"  # the input row is not changed


def test_graft_shortens_the_note_or_leaves_a_full_analysis_alone() -> None:
    s = "2024年行业规模为3.2万亿元，同比增长8%，占GDP的2.5%。"
    notes = note_for(s)
    assert [n.count("、") for n in notes] == [2, 1, 0]
    full = row(9, "营收增长。利润改善。", ["营业收入"], analysis="析" * (MAX_ANALYSIS_CHARS - len(notes[1])))
    g = graft_row(full, s, random.Random(0))
    assert g is not None and g.output["analysis"].endswith(notes[1]) and len(g.output["analysis"]) == MAX_ANALYSIS_CHARS
    assert graft_row(row(9, "营收增长。", ["营业收入"], analysis="析" * MAX_ANALYSIS_CHARS), s, random.Random(0)) is None


def test_graft_rows_share_seed_and_stats() -> None:
    rows = [row(i, f"公司第{i}季度营收增长。利润改善明显。", ["营业收入"]) for i in range(400)]
    pool = background_pool(ROWS)
    a, st = graft_rows(rows, pool, 0.25, seed=3)
    assert a == graft_rows(rows, pool, 0.25, seed=3)[0]  # reproducible
    assert a != graft_rows(rows, pool, 0.25, seed=4)[0]
    assert 70 < st.grafted < 130 and st.grafted == sum(r.source.endswith("+graft") for r in a)  # 0.25 x 400 = 100
    assert (st.pool, st.rows, st.too_long) == (2, 400, 0)
    assert [r.output["metrics"] for r in a] == [r.output["metrics"] for r in rows]
    assert graft_rows(rows, pool, 0.0, seed=3)[0] == rows and graft_rows(rows, [], 1.0, seed=3)[0] == rows
    with pytest.raises(ValueError, match="share"):
        graft_rows(rows, pool, 1.5, seed=3)


def test_recipe_keys_and_their_checks(tmp_path: Path) -> None:
    cfg = build_config("tiny-cpu", parse_set(["graft_share=0.3", "extra_data=[a.jsonl, b/]"]))
    assert cfg.graft_share == 0.3 and cfg.extra_data == ["a.jsonl", "b/"]
    assert "graft_share" in cfg.hyperparameters() and "extra_data" not in cfg.hyperparameters()  # paths: in data files
    assert build_config("tiny-cpu", parse_set(["extra_data=a.jsonl"])).extra_data == ["a.jsonl"]
    with pytest.raises(ConfigError, match="graft_share"):
        build_config("tiny-cpu", parse_set(["graft_share=2"]))
    with pytest.raises(ConfigError, match="graft_note"):
        build_config("tiny-cpu", parse_set(["graft_note=没有占位符"]))


def _write(path: Path, objs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def test_extra_data_joins_train_only_with_its_sha256(tmp_path: Path, demo_jsonl: Path) -> None:
    objs = [r.obj for r in iter_jsonl(demo_jsonl)]
    base = _write(tmp_path / "train.jsonl", objs[:8])
    extra = _write(tmp_path / "team.jsonl", objs[8:])
    loaded = load_training_data(base, dev_fraction=0.25, seed=1, extra_data=[extra])
    base_only = load_training_data(base, dev_fraction=0.25, seed=1)
    assert [r.source for r in loaded.dev] == [r.source for r in base_only.dev]  # the dev split is the same
    team = [r for r in loaded.train if r.source.startswith(str(extra))]
    assert len(team) == len(objs) - 8 and len(loaded.train) == len(base_only.train) + len(team)
    files = {Path(f.path).name: f for f in loaded.files}
    assert files["team.jsonl"].role == "train-extra" and files["team.jsonl"].sha256 == file_sha256(extra)
    assert files["team.jsonl"].rows == len(team)

    # An extra row repeating a dev paragraph (whitespace aside) is refused: dev must never be trained on.
    dev_obj = next(o for o in objs[:8] if o["input"]["paragraph"] == loaded.dev[0].paragraph)
    leak = json.loads(json.dumps(dev_obj))
    leak["input"]["paragraph"] = " " + leak["input"]["paragraph"]
    with pytest.raises(DataError, match="repeat a dev paragraph"):
        load_training_data(base, dev_fraction=0.25, seed=1, extra_data=[_write(tmp_path / "leak.jsonl", [leak])])
    bad = json.loads(json.dumps(objs[8]))
    bad["output"]["metrics"] = [{"metric_name": "x"}]
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_training_data(base, dev_fraction=0.25, seed=1, extra_data=[_write(tmp_path / "bad.jsonl", [bad])])


def test_setup_data_applies_extra_rows_and_graft_to_train_only(tmp_path: Path, demo_jsonl: Path, tiny_model: Path) -> None:
    """LoraRecipe's data step (no model loaded): extra rows in train, grafts in train, dev as without them;
    run.json records the setting, the recipe the graft counts for the manifest."""
    from reportminer.trainer.train import LoraRecipe

    objs = [r.obj for r in iter_jsonl(demo_jsonl)]
    base = _write(tmp_path / "train.jsonl", objs[:8])
    extra = _write(tmp_path / "team.jsonl", objs[8:])

    def recipe(name: str, *sets: str) -> LoraRecipe:
        cfg = build_config("tiny-cpu", {"model": str(tiny_model), "data": str(base), "output": str(tmp_path / name),
                                        "dev_fraction": 0.25, "progress": False, **parse_set(sets)})
        r = LoraRecipe(cfg, tmp_path / name)
        r.setup_data()
        return r

    plain = recipe("plain")
    lever = recipe("lever", f"extra_data=[{extra}]", "graft_share=1.0")
    assert [r.source for r in lever.loaded.dev] == [r.source for r in plain.loaded.dev]
    assert not any(r.source.endswith("+graft") for r in lever.loaded.dev)
    assert len(lever.loaded.train) == len(plain.loaded.train) + len(objs) - 8
    assert lever.graft["pool_sentences"] > 0 and lever.graft["grafted_rows"] > 0
    assert lever.graft["grafted_rows"] + lever.graft["left_too_long"] <= len(lever.loaded.train)
    assert plain.graft["grafted_rows"] == 0
    run = json.loads((tmp_path / "lever" / "run.json").read_text())
    assert run["config"]["graft_share"] == 1.0 and run["config"]["extra_data"] == [str(extra)]
    assert {d["path"] for d in run["identity"]["data"]} == {str(base), str(extra)}
    assert recipe("again", f"extra_data=[{extra}]", "graft_share=1.0").loaded.train == lever.loaded.train  # by seed
