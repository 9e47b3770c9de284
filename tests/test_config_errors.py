"""The shared config mechanism (data.config) and the shared errors and exit codes (data.errors)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml
from click.testing import CliRunner

from reportminer.data import errors
from reportminer.data.config import apply_overrides, coerce_field, parse_set, resolve_named, values_from
from reportminer.data.errors import ConfigError, DataError, ReportminerError
from reportminer.engine.config import EngineConfig


@dataclass
class Knobs:
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    name: str = "x"
    maybe: int | None = None
    size: int | str | None = None
    mode: Literal["8bit", "4bit", "none"] = "8bit"
    items: list[str] = field(default_factory=list)
    table: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("flag", "true", True), ("flag", "yes", True), ("flag", "1", True), ("flag", "on", True),
        ("flag", "false", False), ("flag", "no", False), ("flag", "0", False), ("flag", "OFF", False),
        ("count", "42", 42), ("count", "1e3", 1000), ("rate", "1e-4", 1e-4), ("rate", "3", 3.0),
        ("name", "some text", "some text"), ("maybe", "7", 7), ("maybe", "none", None), ("maybe", "null", None),
        ("size", "2GiB", "2GiB"), ("size", "4096", 4096), ("mode", "4bit", "4bit"), ("mode", "none", "none"),
        ("items", "a, b,c", ["a", "b", "c"]), ("items", "[q_proj, v_proj]", ["q_proj", "v_proj"]),
        ("table", "{v3: a/v3, v4: a/v4}", {"v3": "a/v3", "v4": "a/v4"}),
    ],
)
def test_command_line_text_is_coerced_by_the_field_type(key, text, value):
    got = apply_overrides(Knobs(), parse_set([f"{key}={text}"]))
    assert getattr(got, key) == value and type(getattr(got, key)) is type(value)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("flag", "maybe", "expected true or false, got 'maybe'"),
        ("count", "1.5", "expected an integer, got '1.5'"),
        ("count", "abc", "expected an integer, got 'abc'"),
        ("rate", "hot", "expected a number, got 'hot'"),
        ("mode", "3bit", "expected one of 8bit, 4bit, none, got '3bit'"),
    ],
)
def test_bad_text_names_the_key_and_the_source(key, text, expected):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Knobs(), parse_set([f"{key}={text}"]))
    assert str(e.value) == f"--set: {key}: {expected}"


def test_yaml_values_must_fit_their_type():
    assert values_from(Knobs, {"rate": 1, "count": 3.0, "items": ["a"]}, "k.yaml") == {"rate": 1.0, "count": 3, "items": ["a"]}
    assert values_from(Knobs, {"rate": "1e-4"}, "k.yaml") == {"rate": 1e-4}  # PyYAML reads 1e-4 as a string
    with pytest.raises(ConfigError, match=r"^k\.yaml: flag: expected true or false, got 'no'$"):
        values_from(Knobs, {"flag": "no"}, "k.yaml")  # a quoted "no" is a truthy string, never a bool
    with pytest.raises(ConfigError, match=r"^k\.yaml: items: expected list of text"):
        values_from(Knobs, {"items": "a,b"}, "k.yaml")
    with pytest.raises(ConfigError, match=r"k\.yaml: count: expected an integer, got True"):
        coerce_field(Knobs, "count", True, "k.yaml")


def test_unknown_keys_get_a_suggestion():
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'cuont' \(did you mean 'count'\?\); known keys: flag, count"):
        apply_overrides(Knobs(), {"cuont": "3"})
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'; known keys"):
        apply_overrides(Knobs(), {"zzz": "3"})


def test_engine_yaml_is_type_checked_at_load(tmp_path: Path):
    for text, msg in [
        ('temperature: "hot"\n', "temperature: expected a number, got 'hot'"),
        ('guided: "no"\n', "guided: expected true or false, got 'no'"),
        ('seed: "abc"\n', "seed: expected an integer, got 'abc'"),
        ("device: tpu\n", "device: expected one of auto, cpu, cuda, got 'tpu'"),
        ("max_tokens: 300\nmax_num_seq: 32\n", "unknown key 'max_num_seq' (did you mean 'max_num_seqs'?)"),
        ("kv_cache_memory_bytes: lots\n", "cannot read size 'lots'"),
    ]:
        y = tmp_path / "engine.yaml"
        y.write_text(text)
        with pytest.raises(ConfigError) as e:
            EngineConfig.from_yaml(y)
        assert msg in str(e.value) and str(y) in str(e.value), str(e.value)
    y.write_text('temperature: "0.5"\nmax_tokens: 1e3\n')
    cfg = EngineConfig.from_yaml(y)
    assert (cfg.temperature, cfg.max_tokens) == (0.5, 1000)
    with pytest.raises(ConfigError, match=r"^--set: structured_output_backend: expected one of guidance, xgrammar"):
        EngineConfig().with_sets(["structured_output_backend=lark"])
    with pytest.raises(ConfigError, match="temperature: expected a number"):
        EngineConfig(temperature="hot").resolve()  # type: ignore[arg-type]  # Python callers: before vLLM too


def test_bundled_configs_by_name(tmp_path: Path):
    from reportminer.trainer.config import load_recipe

    gpu = EngineConfig.named("gpu")
    assert gpu.device == "cuda" and gpu.max_num_seqs == 512
    assert EngineConfig.named("cpu.yaml").device == "cpu"
    assert load_recipe("qwen2.5-0.5b-lora").recipe == "qwen2.5-0.5b-lora"
    with pytest.raises(ConfigError, match=r"engine config 'gpus': no such file.*cpu, gpu \(did you mean 'gpu'\?\)"):
        EngineConfig.named("gpus")
    own = tmp_path / "mine.yaml"
    own.write_text("max_tokens: 77\n")
    assert resolve_named(str(own), {}) == own and EngineConfig.named(own).max_tokens == 77


def test_engine_config_command_prints_the_resolved_settings():
    from reportminer.engine.cli import main

    r = CliRunner().invoke(main, ["config", "--config", "gpu", "--set", "max_tokens=768", "--set", "guided=no",
                                  "--temperature", "0.2", "--adapter", "v9=/a/v9"])
    assert r.exit_code == 0, r.output
    d = yaml.safe_load(r.output)
    assert (d["device"], d["max_tokens"], d["guided"], d["temperature"]) == ("cuda", 768, False, 0.2)
    assert d["adapters"] == {"v9": "/a/v9"}
    assert list(d) == EngineConfig.field_names()
    r = CliRunner().invoke(main, ["config", "--set", "temperature=hot"])
    assert r.exit_code == errors.EXIT_REFUSED
    assert "engine: refused, nothing ran: ConfigError: --set: temperature: expected a number, got 'hot'" in r.output
    r = CliRunner().invoke(main, ["config", "--keys"])
    assert r.exit_code == 0 and "8bit" not in r.output  # the trainer's quantization key is not the engine's
    assert "quantization: one of none, fp8 (default 'none')" in r.output
    assert "structured_output_backend: one of guidance, xgrammar, outlines, auto (default 'guidance')" in r.output


def test_trainer_config_keys_and_errors():
    from reportminer.trainer.cli import main

    r = CliRunner().invoke(main, ["config", "--keys"])
    assert r.exit_code == 0 and "quantization: one of 8bit, 4bit, none (default '8bit')" in r.output
    r = CliRunner().invoke(main, ["config", "--set", "quantization=3bit"])
    assert r.exit_code == 2 and "trainer: refused, nothing ran: ConfigError: --set: quantization" in r.output


# --------------------------------------------------------------------------------------------- errors


def test_every_error_has_the_base_and_its_exit_code():
    from reportminer.data.manifest import AdapterMismatch
    from reportminer.data.validate import ValidationFailed
    from reportminer.engine.run_manifest import ManifestError, OutputLocked
    from reportminer.engine.runner import ConfigMismatch
    from reportminer.trainer import config as tconfig
    from reportminer.trainer.train import RunExists, TrainingDiverged

    assert tconfig.ConfigError is ConfigError  # one ConfigError for engine and trainer
    codes = {ConfigError: 2, AdapterMismatch: 2, ConfigMismatch: 2, OutputLocked: 2, ManifestError: 2, RunExists: 2,
             DataError: 3, ValidationFailed: 3, TrainingDiverged: 4}
    for cls, code in codes.items():
        assert issubclass(cls, ReportminerError) and cls.exit_code == code, cls
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)  # old `except ValueError` still works
    assert set(errors.EXIT_CODES) == {0, 1, 2, 3, 4, 130}


def test_a_data_error_exits_3_in_every_cli(tmp_path: Path):
    """The same bad file (a line that is not JSON) through each CLI: one exit code, one message shape."""
    from reportminer.data.cli import main as datakit
    from reportminer.engine.cli import main as engine
    from reportminer.evalkit.cli import main as evalkit
    from reportminer.trainer.cli import main as trainer

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": {"chapter_title": "t", "paragraph": "p"}}\n{oops\n', encoding="utf-8")
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"output": {"analysis": "", "metrics": []}}) + "\n")
    not_parquet = tmp_path / "shard.parquet"
    not_parquet.write_text("not a parquet file")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    runs = {
        "datakit": (datakit, ["shard", "--input", str(bad), "--out", str(tmp_path / "s"), "--no-validate"]),
        "evalkit": (evalkit, ["score", "--gold", str(bad), str(pred)]),
        "trainer": (trainer, ["train", "--config", "tiny-cpu", "--model", str(tmp_path / "model"), "--data", str(bad),
                              "--output", str(tmp_path / "run")]),
        "engine": (engine, ["run", "--input", str(not_parquet), "--out", str(tmp_path / "out"), "--model",
                            str(tmp_path / "model"), "--device", "cpu", "-q"]),
    }
    for prog, (main, args) in runs.items():
        r = CliRunner().invoke(main, args)
        assert r.exit_code == errors.EXIT_DATA, (prog, r.output)
        # engine run reports an unreadable shard in its summary (the other shards would have run)
        assert f"{prog}: data error: " in r.output or (prog == "engine" and "cannot read Parquet" in r.output), r.output


def test_every_cli_says_its_version() -> None:
    """`--version` on the four CLIs (issue 9): what a cron log or a bug report needs first."""
    from importlib.metadata import version

    from click.testing import CliRunner

    from reportminer.data.cli import main as datakit
    from reportminer.engine.cli import main as engine
    from reportminer.evalkit.cli import main as evalkit
    from reportminer.trainer.cli import main as trainer

    for name, cli in (("datakit", datakit), ("engine", engine), ("trainer", trainer), ("evalkit", evalkit)):
        r = CliRunner().invoke(cli, ["--version"])
        assert r.exit_code == 0 and r.output.strip() == f"{name} (reportminer) {version('reportminer')}", r.output
