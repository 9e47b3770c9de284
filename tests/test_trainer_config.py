"""Recipes and overrides: the seed's defaults are the default recipe, and every key can be changed by flag."""
from __future__ import annotations

from dataclasses import asdict

import pytest
from click.testing import CliRunner

from reportminer.trainer.cli import main
from reportminer.trainer.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    build_config,
    list_recipes,
    load_recipe,
    parse_set,
)


def test_bundled_recipes_load_and_validate():
    names = set(list_recipes())
    assert {"qwen3-14b-qlora", "qwen2.5-0.5b-lora", "tiny-cpu"} <= names
    for n in names:
        cfg = load_recipe(n).validate()
        assert cfg.description, f"{n}: recipes say what they are for"
        assert cfg.recipe == n


def test_default_recipe_is_the_seed_recipe():
    seed = load_recipe(None)
    assert seed.recipe == "qwen3-14b-qlora"
    # The dataclass defaults and the seed's YAML must agree key for key (the YAML is what users read).
    assert seed.hyperparameters() == TrainConfig().hyperparameters()
    assert (seed.quantization, seed.llm_int8_threshold) == ("8bit", 6.0)
    assert (seed.lora_r, seed.lora_alpha, seed.lora_dropout) == (16, 32, 0.05)
    assert seed.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (seed.micro_batch_size, seed.gradient_accumulation_steps, seed.effective_batch_size) == (2, 8, 16)
    assert (seed.learning_rate, seed.lr_scheduler, seed.warmup_ratio, seed.max_grad_norm) == (2e-4, "cosine", 0.05, 0.3)
    assert (seed.optimizer, seed.precision, seed.gradient_checkpointing) == ("paged_adamw_8bit", "auto", True)
    assert (seed.max_length, seed.epochs, seed.save_total_limit) == (2048, 5, 3)


def test_overrides_are_typed_and_checked():
    cfg = build_config("tiny-cpu", parse_set(["lora_r=32", "learning_rate=1e-4", "target_modules=[q_proj,v_proj]",
                                              "gradient_checkpointing=true", "dev_data=dev.jsonl"]))
    assert (cfg.lora_r, cfg.learning_rate, cfg.target_modules, cfg.gradient_checkpointing) == (32, 1e-4, ["q_proj", "v_proj"], True)
    assert cfg.dev_data == "dev.jsonl"
    assert apply_overrides(cfg, {"target_modules": "q_proj, k_proj"}).target_modules == ["q_proj", "k_proj"]
    with pytest.raises(ConfigError, match="unknown key 'lora_rank'"):
        build_config("tiny-cpu", {"lora_rank": 8})
    with pytest.raises(ConfigError, match="--set: lora_r: expected an integer, got 'sixteen'"):
        build_config("tiny-cpu", {"lora_r": "sixteen"})
    with pytest.raises(ConfigError, match="quantization"):
        build_config("tiny-cpu", {"quantization": "3bit"})
    with pytest.raises(ConfigError, match="dev_fraction"):
        build_config("tiny-cpu", {"dev_fraction": 1.5})
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe("no-such-recipe")


def test_recipe_file_with_a_typo_is_refused(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("lora_r: 8\nlearning_rte: 1e-4\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: unknown key 'learning_rte'"):
        load_recipe(p)
    p.write_text("lora_r: 8\nepochs: 2\n")
    cfg = load_recipe(p)
    assert (cfg.lora_r, cfg.epochs, cfg.quantization) == (8, 2.0, "8bit")  # unset keys keep the seed defaults


def test_cli_help_has_examples_and_config_resolves():
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--help"])
    assert r.exit_code == 0
    assert "Examples:" in r.output and "trainer train --model" in r.output and "--resume" in r.output
    r = runner.invoke(main, ["recipes"])
    assert r.exit_code == 0 and "qwen2.5-0.5b-lora" in r.output and "tiny-cpu" in r.output
    r = runner.invoke(main, ["config", "--config", "qwen3-14b-qlora", "--quantization", "4bit", "--set", "lora_r=32", "--lr", "1e-4"])
    assert r.exit_code == 0, r.output
    assert "quantization: 4bit" in r.output and "lora_r: 32" in r.output and "learning_rate: 0.0001" in r.output
    r = runner.invoke(main, ["config", "--set", "nonsense=1"])
    assert r.exit_code == 2 and "unknown key 'nonsense'" in r.output


def test_train_needs_model_data_output(tmp_path):
    r = CliRunner().invoke(main, ["train", "--config", "tiny-cpu", "--output", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--model" in r.output


def test_hyperparameters_leave_out_paths():
    hp = TrainConfig(model="/m", data="/d", output="/o").hyperparameters()
    assert "model" not in hp and "output" not in hp and "lora_r" in hp
    assert set(hp) < set(asdict(TrainConfig()))
