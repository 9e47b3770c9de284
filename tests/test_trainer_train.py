"""Real training runs on the tiny random Qwen3 (CPU): learning, artifacts, manifests, quantised bases,
resume, and the adapter in the real vLLM engine.

The learning check needs a model that *can* become confident. The `tiny_model` fixture's tied embedding
rows have std 0.02 behind a frozen final RMSNorm, which caps every logit near +-2.6: no LoRA can lift a
token's probability far above uniform, and its loss stalls at ~9.9 whatever the trainer does. The
`learnable_model` below is that same model with the embedding matrix scaled by 4 (initial loss still
~12.3, the uniform level ln 151k = 11.9), so a falling loss measures the trainer, not the cap.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reportminer.data.io import file_sha256 as sha256_file
from reportminer.data.io import iter_jsonl
from reportminer.data.manifest import (
    MANIFEST_NAME,
    AdapterManifest,
    AdapterMismatch,
    base_model_fingerprint,
    check_adapter,
)
from reportminer.trainer.config import build_config
from reportminer.trainer.train import RunExists, train

SHORT_ANSWERS = [
    {"analysis": "段落为背景描述，无核心指标。", "metrics": []},
    {"analysis": "利润增长是主线。", "metrics": [
        {"metric_name": "归母净利润", "metric_type": "financial", "score": 0.9, "reason": "主线"}]},
]


def _short_rows(demo_jsonl: Path, start: int, n: int) -> list[dict]:
    """Real demo paragraphs with short answers: steps stay cheap on 2 cores, the prompts stay real."""
    objs = [r.obj for r in iter_jsonl(demo_jsonl)][start:start + n]
    return [{"input": o["input"], "output": SHORT_ANSWERS[i % 2]} for i, o in enumerate(objs)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def learnable_model(tiny_model, tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("learnable") / "model"
    shutil.copytree(tiny_model, out)
    sd = load_file(str(tiny_model / "model.safetensors"))
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] * 4
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def short_data(demo_jsonl, tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("short")
    return _write(d / "train.jsonl", _short_rows(demo_jsonl, 0, 4)), _write(d / "dev.jsonl", _short_rows(demo_jsonl, 4, 2))


@pytest.fixture(scope="module")
def learned(learnable_model, short_data, tmp_path_factory):
    """Six epochs over four repeated examples (12 optimiser steps), dev loss after each epoch."""
    tr, dv = short_data
    out = tmp_path_factory.mktemp("learned") / "run"
    cfg = build_config("tiny-cpu", {"model": str(learnable_model), "data": str(tr), "dev_data": str(dv),
                                    "output": str(out), "epochs": 6, "learning_rate": 1e-2, "progress": False})
    return cfg, train(cfg)


def test_loss_falls_clearly(learned):
    cfg, res = learned
    assert res.global_step == 12 and len(res.epochs) == 6
    assert res.first_loss > 11.0  # an untrained adapter: about the uniform loss over 151k tokens
    assert res.train_loss < 0.5 * res.first_loss, (res.first_loss, res.train_loss)
    evals = [e.eval_loss for e in res.epochs]
    assert evals[-1] < 0.5 * res.first_loss and evals[-1] < evals[0]
    assert res.best_eval_loss == min(evals)


def test_run_folder_and_adapters(learned):
    cfg, res = learned
    out = Path(cfg.output)
    for d in (res.final_adapter, res.best_adapter):
        for name in ("adapter_config.json", "adapter_model.safetensors", MANIFEST_NAME, "loss_curves.png"):
            assert (d / name).is_file(), d / name
        assert (d / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 3  # one per epoch, the last three kept
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 7))
    assert all(e["train_seconds"] > 0 and e["eval_loss"] is not None for e in metrics["epochs"])
    assert "train.log" in {p.name for p in out.iterdir()} and (out / "log.jsonl").stat().st_size > 0
    cfgj = json.loads((res.final_adapter / "adapter_config.json").read_text())
    assert cfgj["r"] == 16 and sorted(cfgj["target_modules"]) == sorted(cfg.target_modules)


def test_manifest_records_what_the_adapter_was_trained_on(learned, learnable_model, short_data):
    cfg, res = learned
    tr, dv = short_data
    final = AdapterManifest.read(res.final_adapter)
    best = AdapterManifest.read(res.best_adapter)
    assert final.base_model == base_model_fingerprint(learnable_model)
    assert {(Path(f["path"]).name, f["sha256"], f["rows"], f["role"]) for f in final.data_files} == {
        ("train.jsonl", sha256_file(tr), 4, "train"), ("dev.jsonl", sha256_file(dv), 2, "dev")}
    hp = final.hyperparameters
    assert (hp["lora_r"], hp["lora_alpha"], hp["learning_rate"], hp["epochs"], hp["effective_batch_size"]) == (16, 32, 1e-2, 6, 2)
    assert final.train_loss == pytest.approx(res.train_loss) and final.eval_loss == pytest.approx(res.eval_loss)
    assert best.eval_loss == pytest.approx(res.best_eval_loss)
    assert {"torch", "transformers", "peft", "trl", "bitsandbytes", "python"} <= set(final.library_versions)
    assert final.extra["adapter"] == "final" and best.extra["adapter"] == "best"
    assert final.extra["plan"]["device"] == "cpu" and final.extra["train_rows"] == 4
    assert check_adapter(res.final_adapter, learnable_model) == []
    # the type prior of the training split's labels beside both adapters, recorded in their manifests
    from reportminer.data.type_prior import TypePrior, build_type_prior, label_pairs

    want = build_type_prior(label_pairs(json.loads(x)["output"] for x in tr.read_text(encoding="utf-8").splitlines()))
    for d, man in ((res.final_adapter, final), (res.best_adapter, best)):
        assert TypePrior.read(d) == want
        assert man.extra["type_prior"] == {"sha256": want.sha256(), "keys": len(want.counts),
                                           "labelled_metrics": want.labelled_metrics}


def test_manifest_mismatch_is_refused(learned, learnable_model, tmp_path):
    _, res = learned
    # Another base model: same family, one more layer (config is all check_adapter reads).
    other = tmp_path / "other-model"
    other.mkdir()
    cfg = json.loads((learnable_model / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterMismatch, match="base model"):
        check_adapter(res.final_adapter, other)

    for field, match in (("schema_version", "schema"), ("prompt_version", "prompt")):
        a = tmp_path / f"adapter-{field}"
        shutil.copytree(res.final_adapter, a)
        m = json.loads((a / MANIFEST_NAME).read_text())
        m[field] = "v0-000000000000"
        (a / MANIFEST_NAME).write_text(json.dumps(m))
        with pytest.raises(AdapterMismatch, match=match):
            check_adapter(a, learnable_model)

    bare = tmp_path / "no-manifest"
    shutil.copytree(res.final_adapter, bare)
    (bare / MANIFEST_NAME).unlink()
    warnings = check_adapter(bare, learnable_model)
    assert len(warnings) == 1 and "no reportminer_adapter.json" in warnings[0]


def test_engine_refuses_mismatched_trainer_adapters(learned, learnable_model, tmp_path):
    """The engine's adapter loading (when the engine package exists) applies the same check."""
    adapters = pytest.importorskip("reportminer.engine.adapters")
    _, res = learned
    loaded, warnings = adapters.load_adapters({"ours": str(res.final_adapter)}, learnable_model)
    assert loaded[0].rank == 16 and warnings == []
    a = tmp_path / "wrong-prompt"
    shutil.copytree(res.final_adapter, a)
    m = json.loads((a / MANIFEST_NAME).read_text())
    m["prompt_version"] = "v0-000000000000"
    (a / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(AdapterMismatch, match="prompt"):
        adapters.load_adapters({"wrong": str(a)}, learnable_model)


def test_an_existing_run_is_not_overwritten_by_accident(learned):
    cfg, _ = learned
    with pytest.raises(RunExists, match="--resume"):
        train(cfg)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantised_base_trains_on_cpu(quantization, tiny_model, short_data, tmp_path):
    """The seed recipe itself (8-bit or NF4 base, paged AdamW 8-bit, checkpointing) runs a few steps on CPU."""
    tr, _ = short_data
    cfg = build_config(None, {"model": str(tiny_model), "data": str(tr), "output": str(tmp_path / "q"),
                              "quantization": quantization, "max_steps": 1, "micro_batch_size": 2,
                              "gradient_accumulation_steps": 1, "warmup_ratio": 0, "dev_fraction": 0,
                              "progress": False})
    res = train(cfg)
    assert res.global_step == 1 and res.first_loss is not None and res.first_loss == res.first_loss  # not NaN
    man = AdapterManifest.read(res.final_adapter)
    assert man.hyperparameters["quantization"] == quantization
    plan = man.extra["plan"]
    assert plan["optimizer"] == "adamw_torch" and "paged_adamw_8bit needs a CUDA device" in plan["notes"][0]
    assert res.best_adapter is None  # no dev split, no best
    from safetensors.torch import load_file

    w = load_file(str(res.final_adapter / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in w.items())  # B moved off zero


def test_resume_continues_from_the_saved_step(learnable_model, short_data, tmp_path):
    from transformers import TrainerCallback

    tr, dv = short_data

    class Interrupt(Exception):
        pass

    class StopAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise Interrupt(f"interrupted after saving step {state.global_step}")

    def cfg_for(out):
        return build_config("tiny-cpu", {"model": str(learnable_model), "data": str(tr), "dev_data": str(dv),
                                         "output": str(out), "epochs": 2, "learning_rate": 1e-2, "progress": False})

    straight = train(cfg_for(tmp_path / "straight"))

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt, match="step 2"):
        train(cfg_for(out), callbacks=[StopAfterFirstSave()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "final").exists()
    assert (out / "best").is_dir()  # epoch 1's dev loss was evaluated before the save

    resumed = train(cfg_for(out), resume=True)
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == 4 and [e.epoch for e in resumed.epochs] == [1, 2]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if '"loss"' in line and "eval_loss" not in line]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) == 4  # no step trained twice
    # Same data order, RNG and weights after the resume: the losses match the uninterrupted run.
    for a, b in zip(straight.epochs, resumed.epochs):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)
        assert a.eval_loss == pytest.approx(b.eval_loss, rel=1e-3)


def test_early_stop_after_a_worse_epoch(learnable_model, short_data, tmp_path):
    """early_stop_patience 1: the first epoch without a lower dev loss ends the run; best/ keeps the best epoch.
    The worse epoch is made, not hoped for: a callback overwrites the LoRA B weights at the end of epoch 2,
    before that epoch's dev loss is taken (real training and evaluation otherwise)."""
    import torch
    from transformers import TrainerCallback

    class SpoilEpoch2(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kw):
            if round(state.epoch) == 2:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "lora_B" in name:
                            p.fill_(0.5)

    tr, dv = short_data
    cfg = build_config("tiny-cpu", {"model": str(learnable_model), "data": str(tr), "dev_data": str(dv),
                                    "output": str(tmp_path / "es"), "epochs": 4, "learning_rate": 1e-2,
                                    "progress": False, "early_stop_patience": 1})
    res = train(cfg, callbacks=[SpoilEpoch2()])
    evals = [e.eval_loss for e in res.epochs]
    assert len(evals) == 2 and evals[1] > evals[0], evals  # epochs 3 and 4 never ran
    assert res.stopped_early_after == 2 and res.global_step == 4  # 2 optimiser steps an epoch
    assert res.best_eval_loss == evals[0]
    best = json.loads((res.best_adapter / MANIFEST_NAME).read_text())
    final = json.loads((res.final_adapter / MANIFEST_NAME).read_text())
    assert best != final  # best/ is epoch 1's adapter, final/ the spoilt epoch 2
    assert json.loads((tmp_path / "es" / "metrics.json").read_text())["stopped_early_after"] == 2
    assert "early stop after epoch 2" in (tmp_path / "es" / "train.log").read_text()


def test_early_stop_needs_dev_rows(learnable_model, short_data, tmp_path):
    from reportminer.trainer.config import ConfigError

    tr, _ = short_data
    with pytest.raises(ConfigError, match="early_stop_patience: needs dev rows"):
        build_config("tiny-cpu", {"model": str(learnable_model), "data": str(tr), "output": str(tmp_path / "x"),
                                  "dev_fraction": 0, "early_stop_patience": 1}).validate()


def test_resume_refuses_other_settings(learnable_model, short_data, tmp_path):
    tr, dv = short_data
    base = {"model": str(learnable_model), "data": str(tr), "dev_data": str(dv), "output": str(tmp_path / "r"),
            "max_steps": 1, "progress": False}
    train(build_config("tiny-cpu", base))
    from reportminer.trainer.config import ConfigError

    with pytest.raises(ConfigError, match="lora_r: 16 -> 8"):
        train(build_config("tiny-cpu", {**base, "lora_r": 8}), resume=True)


@pytest.mark.engine
def test_adapter_loads_in_vllm_and_changes_outputs(learned, learnable_model):
    """The trained adapter in the real vLLM engine: guided JSON, outputs differ from the base model and
    move toward what the adapter was trained on."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from rapidfuzz import fuzz
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    from reportminer.data import OUTPUT_JSON_SCHEMA, parse_output, render_prompt, to_json

    cfg, res = learned
    rows = [r.obj for r in iter_jsonl(cfg.data)]
    tok = AutoTokenizer.from_pretrained(str(learnable_model))
    prompts = [render_prompt(tok, r["input"]["chapter_title"], r["input"]["paragraph"]) for r in rows]
    llm = LLM(model=str(learnable_model), kv_cache_memory_bytes=1 << 30, max_model_len=2048, enable_lora=True,
              max_lora_rank=16, structured_outputs_config={"backend": "guidance", "disable_any_whitespace": True}, seed=0)
    sp = SamplingParams(temperature=0, max_tokens=128, structured_outputs=StructuredOutputsParams(json=OUTPUT_JSON_SCHEMA))
    base = [o.outputs[0].text for o in llm.generate(prompts, sp)]
    tuned = [o.outputs[0].text for o in llm.generate(prompts, sp, lora_request=LoRARequest("trained", 1, str(res.final_adapter)))]
    assert base != tuned
    gold = [to_json(r["output"]) for r in rows]
    closer = sum(fuzz.ratio(t, g) > fuzz.ratio(b, g) for b, t, g in zip(base, tuned, gold))
    assert closer >= 3, list(zip(base, tuned))
    assert sum(parse_output(t).json_valid for t in tuned) >= 1


def test_adapter_saved_in_bf16_halves_and_keeps_weights(learned, tmp_path):
    """`adapter_dtype: bf16` (the demo recipe): same tensors, bf16, half the bytes, still a peft adapter."""
    import torch
    from safetensors.torch import load_file

    from reportminer.trainer.artifacts import cast_adapter

    _, res = learned
    a = tmp_path / "bf16"
    shutil.copytree(res.final_adapter, a)
    cast_adapter(a, "bf16")
    before = load_file(str(res.final_adapter / "adapter_model.safetensors"))
    after = load_file(str(a / "adapter_model.safetensors"))
    assert set(before) == set(after) and all(v.dtype == torch.bfloat16 for v in after.values())
    for k in before:
        torch.testing.assert_close(after[k].float(), before[k].float(), rtol=1e-2, atol=1e-3)
    assert (a / "adapter_model.safetensors").stat().st_size < 0.6 * (res.final_adapter / "adapter_model.safetensors").stat().st_size
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(a)).r == 16
