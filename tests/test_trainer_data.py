"""What the trainer trains on: validated rows, a stratified dev split, and loss on answer tokens only."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.io import DataError, iter_jsonl
from reportminer.data.prompt import render_prompt, render_training_example
from reportminer.trainer.cli import main
from reportminer.trainer.config import build_config
from reportminer.trainer.examples import tokenize_rows
from reportminer.trainer.rows import load_training_data, read_rows, split_dev


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bad_rows_stop_the_run_with_file_and_line(tmp_path, demo_jsonl, tiny_model):
    good = [r.obj for r in iter_jsonl(demo_jsonl)][:3]
    bad_type = json.loads(json.dumps(good[1]))
    bad_type["output"]["metrics"][0]["metric_type"] = "finance"
    data = _write(tmp_path / "labels.jsonl", [good[0], bad_type, good[2], '{"input": {"chapter_title": "x", "paragraph"'])
    with pytest.raises(DataError) as e:
        load_training_data(data)
    msg = str(e.value)
    assert "labels.jsonl:2" in msg and "finance" in msg
    assert "labels.jsonl:4" in msg and "invalid JSON" in msg

    # Through the CLI: exit 3 (a data error, data.errors), the same locations, and nothing trained.
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--model", str(tiny_model), "--data", str(data), "--output", str(out),
                                  "--config", "tiny-cpu", "--no-progress"])
    assert r.exit_code == 3, r.output
    assert "labels.jsonl:2" in r.output and "labels.jsonl:4" in r.output
    assert not (out / "checkpoints").exists() and not (out / "final").exists()


def test_rows_without_labels_are_errors(tmp_path, demo_jsonl):
    obj = next(iter_jsonl(demo_jsonl)).obj
    data = _write(tmp_path / "x.jsonl", [obj, {"input": obj["input"]}])
    with pytest.raises(DataError, match=r"x.jsonl:2.*output"):
        load_training_data(data)


def test_stratified_dev_split_on_the_seed(seed_dir):
    loaded = load_training_data(seed_dir / "data", dev_fraction=0.05, seed=42)
    assert len(loaded.train) + len(loaded.dev) == 700
    by_type = Counter(r.scenario for r in loaded.dev)
    assert set(by_type) == {"A", "B", "C", "D"}  # every scenario is watched, the 72 type-C rows too
    assert 30 <= len(loaded.dev) <= 40
    again = load_training_data(seed_dir / "data", dev_fraction=0.05, seed=42)
    assert [r.source for r in again.dev] == [r.source for r in loaded.dev]  # reproducible for a seed
    assert {f["path"].rsplit("/", 1)[-1]: f["rows"] for f in (x.to_dict() for x in loaded.files)} == {
        "type_a.jsonl": 270, "type_b.jsonl": 202, "type_c.jsonl": 72, "type_d.jsonl": 156}
    assert all(len(f.sha256) == 64 for f in loaded.files)


def test_split_edge_cases(demo_jsonl):
    rows = read_rows(demo_jsonl)
    train, dev = split_dev(rows, 0.0, 1)
    assert (len(train), len(dev)) == (len(rows), 0)
    train, dev = split_dev(rows[:3], 0.01, 1)  # tiny sets still get one dev row
    assert (len(train), len(dev)) == (2, 1)


def test_separate_dev_file(tmp_path, demo_jsonl):
    objs = [r.obj for r in iter_jsonl(demo_jsonl)]
    tr = _write(tmp_path / "train.jsonl", objs[:8])
    dv = _write(tmp_path / "dev.jsonl", objs[8:])
    loaded = load_training_data(tr, dev_data=dv, dev_fraction=0.5)
    assert (len(loaded.train), len(loaded.dev)) == (8, len(objs) - 8)
    assert [f.role for f in loaded.files] == ["train", "dev"]


def test_prompt_tokens_are_the_served_prompt_and_only_the_answer_carries_loss(tiny_model, demo_jsonl, tmp_path):
    """Labels as trl builds them: -100 on every prompt token, the answer + end-of-turn exactly once."""
    from reportminer.trainer.modeling import load_base_model, load_tokenizer, plan_for
    from reportminer.trainer.train import build_trainer

    cfg = build_config("tiny-cpu", {"model": str(tiny_model), "data": str(demo_jsonl), "output": str(tmp_path)})
    tok = load_tokenizer(str(tiny_model))
    rows = read_rows(demo_jsonl)
    ts = tokenize_rows(tok, rows, cfg.max_length)
    assert len(ts.examples) == len(rows) and not ts.skipped
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    for row, ex in zip(rows, ts.examples):
        served = render_prompt(tok, row.chapter_title, row.paragraph)
        assert served.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # thinking off, as served
        engine_ids = tok(served)["input_ids"]  # how the engine's vLLM tokenises the prompt string
        assert ex.input_ids[: ex.prompt_len] == engine_ids
        tt = render_training_example(tok, row.chapter_title, row.paragraph, row.output)
        assert tok(tt.text, add_special_tokens=False)["input_ids"] == ex.input_ids  # no merge across the boundary

    plan = plan_for(cfg)
    trainer = build_trainer(cfg, plan, load_base_model(cfg, plan), tok, ts, None, tmp_path, [])
    for row, ex, prepared in zip(rows, ts.examples, trainer.train_dataset):
        labels, ids = prepared["labels"], prepared["input_ids"]
        assert ids == ex.input_ids  # trl added nothing (no second EOS) and truncated nothing
        assert all(lab == -100 for lab in labels[: ex.prompt_len])
        assert labels[ex.prompt_len:] == ids[ex.prompt_len:]
        answer_text = tok.decode(labels[ex.prompt_len:])
        tt = render_training_example(tok, row.chapter_title, row.paragraph, row.output)
        assert answer_text == tt.completion and answer_text.endswith("}<|im_end|>\n")
        assert labels.count(im_end) == 1
        assert json.loads(answer_text[: -len("<|im_end|>\n")]) == json.loads(json.dumps(row.output))

    # The collator pads with -100 labels, so padding never carries loss either.
    batch = next(iter(trainer.get_train_dataloader()))
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == -100).all()
    for i in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][i].bool()
        n_loss = int((batch["labels"][i][real] != -100).sum())
        assert n_loss in {sum(e.completion_mask) for e in ts.examples}


def test_overlong_examples_are_skipped_not_truncated(tiny_model, demo_jsonl):
    from reportminer.trainer.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    rows = read_rows(demo_jsonl)
    lengths = [len(e.input_ids) for e in tokenize_rows(tok, rows, 10_000).examples]
    cut = sorted(lengths)[len(lengths) // 2]
    ts = tokenize_rows(tok, rows, cut)
    assert len(ts.examples) == sum(n <= cut for n in lengths)
    assert len(ts.skipped) == sum(n > cut for n in lengths) > 0
    assert all("demo.jsonl:" in s and "tokens > max_length" in s for s in ts.skipped)
