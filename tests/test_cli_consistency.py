"""The four CLIs behave alike (issue 9, item 8): `--version`, `--json PATH` with `-` for stdout, the
trainer's stdout holding only its result, `report_to`, and one-line data errors instead of tracebacks.

Every error case asserts the exit code and the message; stdout cases parse stdout as one JSON document.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reportminer.data.cli import main as datakit
from reportminer.engine.cli import main as engine
from reportminer.evalkit.cli import main as evalkit
from reportminer.trainer.cli import main as trainer

CLIS = {"datakit": datakit, "engine": engine, "trainer": trainer, "evalkit": evalkit}
# Every command that writes a machine-readable result.
JSON_COMMANDS = [("datakit", "validate"), ("datakit", "stats"), ("datakit", "shard"), ("datakit", "export"),
                 ("datakit", "ingest"), ("engine", "run"), ("trainer", "train"), ("evalkit", "score"), ("evalkit", "compare")]


def invoke(cli: str, *args, code: int = 0):
    res = CliRunner().invoke(CLIS[cli], [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_version_on_all_four(cli: str):
    out = invoke(cli, "--version").stdout
    assert out.startswith(f"{cli} (reportminer) ") and out.strip().split()[-1][0].isdigit()


@pytest.mark.parametrize("cli,cmd", JSON_COMMANDS)
def test_json_is_a_path_with_dash_for_stdout_everywhere(cli: str, cmd: str):
    """The same option on every command: `--json PATH`, '-' or the bare flag meaning stdout."""
    help_text = " ".join(invoke(cli, cmd, "--help").stdout.split())
    assert "--json PATH" in help_text and "'-' (or --json alone) prints it on stdout" in help_text
    command = CLIS[cli].commands[cmd]
    base = {"run": ["--input", ".", "--out", "o"], "train": [], "score": [], "compare": ["r"],
            "validate": ["."], "stats": ["."], "shard": ["--input", ".", "--out", "o"],
            "export": ["--input", ".", "--out", "o.jsonl"], "ingest": ["--input", ".", "--out", "o"]}[cmd]
    for args, want in (([], None), (["--json", "-"], "-"), (["--json"], "-"), (["--json", "x.json"], "x.json")):
        ctx = command.make_context(cmd, [*base, *args] if cmd != "score" else [*args, "--gold", ".", "."])
        assert ctx.params["json_out"] == want, (cli, cmd, args)


def test_datakit_validate_and_stats_json_on_stdout(demo_jsonl: Path, tmp_path: Path):
    res = invoke("datakit", "validate", demo_jsonl, "--json", "-")
    report = json.loads(res.stdout)  # stdout is the JSON document alone
    assert report["rows"] == 12 and "OK: 12 rows" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "A", "input": {"chapter_title": "t", "paragraph": ""}}\n', encoding="utf-8")
    res = invoke("datakit", "validate", bad, "--json", "-", code=1)
    assert json.loads(res.stdout)["errors"] and "bad.jsonl:1: error" in res.stderr
    res = invoke("datakit", "stats", demo_jsonl, "--json", "-")
    assert json.loads(res.stdout)["rows"] == 12 and "metric count" in res.stderr.lower()
    invoke("datakit", "stats", demo_jsonl, "--json", tmp_path / "sub" / "st.json")
    assert json.loads((tmp_path / "sub" / "st.json").read_text())["rows"] == 12


def test_evalkit_score_and_compare_json_on_stdout(demo_jsonl: Path, repo_root: Path):
    ex = repo_root / "evalkit" / "examples"
    res = invoke("evalkit", "score", "--gold", demo_jsonl, ex / "demo_batch.json", "--json", "-")
    s = json.loads(res.stdout)
    assert s["n"] == 12 and "strict" in res.stderr  # the tables moved to stderr
    res = invoke("evalkit", "compare", "--gold", demo_jsonl, f"base={ex / 'demo_batch.json'}",
                 f"tuned={ex / 'demo_predictions.jsonl'}", "--bootstrap", "200", "--json")
    c = json.loads(res.stdout)
    assert [r["name"] for r in c["runs"]] == ["base", "tuned"] and "tuned vs base" in res.stderr


# -------------------------------------------------------------------------------- data errors


def test_datakit_shard_no_validate_gbk_is_one_line(tmp_path: Path):
    gbk = tmp_path / "gbk.jsonl"
    rows = [{"type": "A", "input": {"chapter_title": "盈利能力", "paragraph": "营业收入同比增长。"},
             "output": {"analysis": "a", "metrics": []}}] * 3
    gbk.write_bytes(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("gbk") for r in rows))
    res = invoke("datakit", "shard", "--no-validate", "--input", gbk, "--out", tmp_path / "out", code=3)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output
    assert f"{gbk}:1: not UTF-8 text" in err and "iconv -f GBK -t UTF-8" in err
    assert not (tmp_path / "out").exists()


def test_gbk_gold_in_evalkit_is_a_data_error(tmp_path: Path, demo_jsonl: Path):
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(demo_jsonl.read_text(encoding="utf-8").encode("gbk", errors="replace"))
    res = invoke("evalkit", "score", "--gold", gold, demo_jsonl, code=3)
    assert f"{gold}:1: not UTF-8 text" in res.stderr and "Traceback" not in res.output


def test_trainer_report_to_is_a_checked_recipe_key(tmp_path: Path):
    res = invoke("trainer", "config", "--config", "tiny-cpu", "--set", "report_to=tensorboard")
    assert "report_to: tensorboard" in res.stdout
    res = invoke("trainer", "config", "--config", "tiny-cpu", "--set", "report_to=comet", code=2)
    assert "report_to" in res.stderr and "comet" in res.stderr and "mlflow" in res.stderr
    assert "report_to" in invoke("trainer", "config", "--keys").stdout
    from types import SimpleNamespace

    from reportminer.trainer.config import build_config
    from reportminer.trainer.train import _sft_config

    plan = SimpleNamespace(optimizer="adamw_torch", precision="fp32", device="cpu", is_cuda=False)
    for where, want in (("none", []), ("tensorboard", ["tensorboard"]), ("wandb", ["wandb"]), ("mlflow", ["mlflow"])):
        cfg = build_config("tiny-cpu", {"report_to": where})
        assert _sft_config(cfg, plan, tmp_path, False, 8).report_to == want  # what transformers makes of it
    assert build_config("tiny-cpu", {}).report_to == "none"  # nothing leaves the machine unless asked


def test_trainer_stdout_is_only_the_result_json(tiny_model: Path, demo_jsonl: Path, tmp_path: Path):
    """One tiny CPU training run as a real process: stdout parses as the result, the HF Trainer's loss
    records went to stderr (moved, not lost)."""
    out = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "reportminer.trainer.cli", "train", "--model", str(tiny_model), "--data", str(demo_jsonl),
         "--output", str(out), "--config", "tiny-cpu", "--max-steps", "2", "--set", "logging_steps=1", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout)  # the whole of stdout is one JSON document
    assert result["global_step"] == 2 and Path(result["final_adapter"]).is_dir()
    assert "'loss'" in p.stderr  # the Trainer's log records are still printed, on stderr


def test_write_json_out_file_and_stdout(tmp_path: Path, capsys):
    """The one writer behind --json: a file written whole (engine run passes its summary as text), or stdout."""
    from reportminer.data.jsonout import write_json_out

    write_json_out(None, str(tmp_path / "a" / "summary.json"), text='{"rows": 3}')  # engine run's form
    assert json.loads((tmp_path / "a" / "summary.json").read_text()) == {"rows": 3}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["summary.json"]  # no temp file left
    write_json_out({"rows": 4}, str(tmp_path / "b.json"))
    assert json.loads((tmp_path / "b.json").read_text()) == {"rows": 4}
    write_json_out({"rows": 5}, "-")
    assert json.loads(capsys.readouterr().out) == {"rows": 5}
