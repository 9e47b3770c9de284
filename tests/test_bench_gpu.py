"""scripts/bench_gpu.py on CPU: argument checks, the --dry-run plan (input shards, prompts rendered by
data.prompt, token counts, which phases share an engine process), the summary (ratios to bare, the
backend choice, identical shares), the random LoRA it makes for a random-weight shape, and the
load_format hook that Ray actors get through sitecustomize. The phases themselves need a GPU
(docs/BENCHMARKS.md); run on the CPU build they work too, which the lead's check does by hand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_gpu.py"
sys.path.insert(0, str(SCRIPT.parent))
import bench_gpu  # noqa: E402  (scripts/ is not a package)


def bench(*args: str):
    """The CLI in this process (its stdout and stderr apart); the same click command `python bench_gpu.py` runs."""
    return CliRunner().invoke(bench_gpu.main, list(args), catch_exceptions=False)


def test_dry_run_prepares_shards_and_prompts_and_prints_the_plan(tiny_model: Path, demo_jsonl: Path,
                                                                 tmp_path: Path) -> None:
    work = tmp_path / "w"
    p = bench("--model", str(tiny_model), "--input", str(demo_jsonl), "--rows", "30", "--shards", "4",
              "--max-tokens", "64", "--phases", "bare,engine,ray", "--ray-actors", "2,1", "--work", str(work),
              "--dry-run")
    assert p.exit_code == 0, p.stderr[-2000:]
    plan = json.loads(p.stdout)["plan"]  # stdout is the one JSON object, nothing else
    assert plan["rows"] == 30 and plan["will_run"] == ["bare", "engine", "ray1", "ray2"]
    assert plan["load_format"] == "auto" and plan["adapter"]["random"] is True
    assert plan["ray_sets"]["2"] == ["backend=ray", "ray_actors=2", "ray_gpus_per_actor=1"]
    assert plan["ray_config_check"]  # "ok" once the Ray backend's keys exist, else the exact config error
    # the shards hold every row once, unique ids and paragraphs (demo rows cycled, each one made unique)
    rows = [r for f in plan["shards"] for r in pq.read_table(f).to_pylist()]
    assert len(plan["shards"]) == 4 and len(rows) == 30
    assert len({r["id"] for r in rows}) == 30 and len({r["paragraph"] for r in rows}) == 30
    # the prompts are the engine's (data.prompt with the model's chat template), in row order
    from transformers import AutoTokenizer

    from reportminer.data.prompt import render_prompt

    prompts = json.loads((work / "prompts.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert prompts == [render_prompt(tok, r["chapter_title"], r["paragraph"]) for r in rows]
    lengths = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    assert plan["prompt_tokens"] == {"mean": round(sum(lengths) / 30, 1), "min": min(lengths),
                                     "max": max(lengths), "total": sum(lengths)}
    assert json.loads((work / "plan.json").read_text())["rows"] == 30
    assert not (work / "out-engine").exists()  # a dry run starts nothing


def test_dry_run_of_the_14b_shape_writes_its_config_and_tokenizer(tmp_path: Path) -> None:
    p = bench("--shape", "qwen3-14b", "--rows", "8", "--shards", "2", "--phases", "engine", "--work",
              str(tmp_path), "--dry-run")
    assert p.exit_code == 0, p.stderr[-2000:]
    plan = json.loads(p.stdout)["plan"]
    cfg = json.loads((Path(plan["model"]) / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (5120, 40, 17408)
    assert plan["load_format"] == "dummy" and plan["will_run"] == ["engine"] and "ray_config_check" not in plan
    assert (Path(plan["model"]) / "tokenizer_config.json").exists()


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --model and --shape"),
    (["--shape", "qwen3-14b", "--phases", "bare,fast"], "--phases"),
    (["--shape", "qwen3-14b", "--ray-actors", "0,2"], "--ray-actors"),
    (["--shape", "qwen3-14b", "--rows", "0"], "--rows"),
    (["--shape", "qwen3-14b", "--adapter", "noequals"], "NAME=PATH"),
])
def test_bad_arguments_are_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    p = bench(*args, "--work", str(tmp_path), "--dry-run")
    assert p.exit_code == 2 and message in p.stderr, p.stderr[-1000:]
    assert p.stdout == ""


def test_random_lora_from_config_loads_into_peft(tiny_model: Path, tmp_path: Path) -> None:
    """The adapter made for a random-weight shape has the key names and shapes PEFT (and vLLM) expect."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = bench_gpu.make_random_lora(tiny_model, tmp_path / "lora", rank=4)
    saved = load_file(str(out / "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(out))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    assert len(saved) == 2 * 7 * layers and len(loaded) == 7 * layers
    key = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    assert torch.equal(loaded[key.replace("lora_B.weight", "lora_B.default.weight")].to(torch.bfloat16), saved[key])
    assert saved[key].abs().sum() > 0  # B is random, so the adapter changes outputs
    assert (out / "reportminer_adapter.json").exists()


@pytest.mark.engine  # imports vLLM (a minute on two busy cores)
def test_sitecustomize_hook_sets_load_format_in_a_new_process(tmp_path: Path) -> None:
    """What a Ray actor gets: PYTHONPATH + the env variable make vllm.LLM default to the load format."""
    hook = bench_gpu.write_hook(tmp_path)
    code = ("import vllm.entrypoints.llm as m, inspect; "
            "print(m.LLM._bench_load_format, 'install_load_format_hook' in m.LLM.__init__.__qualname__)")
    env = {**os.environ, bench_gpu.LOAD_FORMAT_ENV: "dummy",
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-2:] == ["dummy", "True"]
    env.pop(bench_gpu.LOAD_FORMAT_ENV)  # without the variable the hook does nothing
    p = subprocess.run([sys.executable, "-c", "import sys; print('bench_gpu' in sys.modules, len(sys.meta_path))"],
                       capture_output=True, text=True, timeout=60, env=env)
    q = subprocess.run([sys.executable, "-c", "import sys; print(len(sys.meta_path))"], capture_output=True,
                       text=True, timeout=60, env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    assert p.stdout.split() == ["False", q.stdout.strip()], p.stderr[-2000:]


def test_default_phases_share_engines_where_their_start_settings_agree(tiny_model: Path, tiny_adapter: Path,
                                                                     tmp_path: Path) -> None:
    p = bench("--model", str(tiny_model), "--adapter", f"prod={tiny_adapter}", "--rows", "80", "--work",
              str(tmp_path), "--dry-run")
    assert p.exit_code == 0, p.stderr[-2000:]
    plan = json.loads(p.stdout)["plan"]
    # the engine serves the adapter as LoRA by default (merge_adapter none = off), so `engine` runs beside the
    # LoRA + guidance phases; --set merge_adapter=true moves it beside `merged`
    assert plan["engine_serves_merged"] is False
    assert [(g["name"], g["phases"]) for g in plan["processes"]] == [
        ("bare", ["bare"]), ("merged-guidance", ["merged"]),
        ("lora-guidance", ["json-guidance", "json-uncapped", "engine", "lora"]),
        ("lora-xgrammar", ["json-xgrammar"]), ("start", ["start"])]
    p = bench("--model", str(tiny_model), "--adapter", f"prod={tiny_adapter}", "--rows", "8", "--work",
              str(tmp_path / "w2"), "--set", "merge_adapter=true", "--dry-run")
    procs = {g["name"]: g["phases"] for g in json.loads(p.stdout)["plan"]["processes"]}
    assert procs["merged-guidance"] == ["merged", "engine"]
    assert procs["lora-guidance"] == ["json-guidance", "json-uncapped", "lora"]
    assert set(plan["config_check"].values()) == {"ok"} and plan["max_tokens"] == 1024  # gpu.yaml's
    assert plan["adapter"] == {"name": "prod", "path": str(tiny_adapter.resolve()), "random": False}
    assert pq.read_table(tmp_path / "input-start").num_rows == bench_gpu.START_ROWS


def test_an_engine_that_serves_the_adapter_merged_runs_beside_the_merged_phase(tiny_model: Path) -> None:
    from reportminer.engine import EngineConfig

    cfg = EngineConfig(model=str(tiny_model), adapters={"p": "x"}, merge_adapter=True,
                       structured_output_backend="xgrammar")
    groups = bench_gpu.phase_groups(["json-guidance", "merged", "engine", "ray"], cfg, (1, 2))
    assert [(g["name"], g["phases"]) for g in groups] == [
        ("lora-guidance", ["json-guidance"]), ("merged-xgrammar", ["merged", "engine"]), ("ray1", ["ray1"]),
        ("ray2", ["ray2"])]
    assert groups[1]["sets"] == ["structured_output_backend=xgrammar", "merge_adapter=true"]


def test_engine_merged_runs_beside_merged_and_is_judged_by_the_target_against_the_lora_engine(tiny_model: Path,
                                                                                             tmp_path: Path) -> None:
    """engine-merged: the candidate default for one adapter (issue 17) in the merged process, while `engine` stays
    on LoRA; the summary gives its ratio to bare against the target and compares its rows with the LoRA engine's."""
    from reportminer.engine import EngineConfig

    cfg = EngineConfig(model=str(tiny_model), adapters={"p": "x"})
    groups = bench_gpu.phase_groups(["bare", "merged", "engine-merged", "engine"], cfg)
    assert [(g["name"], g["phases"]) for g in groups] == [
        ("bare", ["bare"]), ("merged-guidance", ["merged", "engine-merged"]), ("lora-guidance", ["engine"])]
    assert groups[1]["sets"] == ["structured_output_backend=guidance", "merge_adapter=true"]
    row = '{"analysis":"a","metrics":[{"metric_name":"%s","metric_type":"financial","score":1,"reason":"r"}]}'
    (tmp_path / "texts-engine.json").write_text(json.dumps({"b0": row % "x", "b1": row % "y"}))
    (tmp_path / "texts-engine-merged.json").write_text(json.dumps({"b0": row % "x", "b1": row % "z"}))
    results = {"bare": {"rows_per_s": 75.0, "output_tok_per_s": 30000.0},
               "engine": {"rows_per_s": 44.0, "output_tok_per_s": 12000.0},
               "engine-merged": {"rows_per_s": 72.0, "output_tok_per_s": 19000.0}}
    s = bench_gpu.summarise({"work": str(tmp_path), "phases": [], "ray_actors": [],
                             "structured_output_backend": "guidance", "engine_serves_merged": False}, results)
    assert s["target"]["meets"] is False and s["target"]["engine_merged_vs_bare_rows_s"] == 0.96
    assert s["target"]["merged_meets"] is True
    pair = s["identical"]["engine-merged_vs_engine"]
    assert pair["identical_share"] == 0.5 and pair["same_metrics_share"] == 0.5


def test_summary_compares_with_bare_chooses_a_backend_on_proof_and_counts_identical_rows(tmp_path: Path) -> None:
    def r(rows_s: float, valid: float) -> dict:
        return {"rows_per_s": rows_s, "output_tok_per_s": rows_s * 300, "valid_share": valid}

    results = {"bare": r(72.7, 0.0), "json-guidance": r(30.5, 1.0), "json-xgrammar": r(40.0, 0.999),
               "merged": r(69.9, 1.0), "engine": r(70.0, 1.0), "lora": {bench_gpu.FAILED: "exit 1"}}
    texts = {"json-guidance": {"b0": "x", "b1": "y", "b2": "z", "b3": "w"},
             "json-xgrammar": {"b0": "x", "b1": "Y", "b2": "z", "b3": "w"},
             "engine": {"b0": "x", "b1": "y", "b2": "z", "b3": "w"}, "lora": {"b0": "never read: failed"}}
    for k, v in texts.items():
        (tmp_path / f"texts-{k}.json").write_text(json.dumps(v))
    plan = {"work": str(tmp_path), "phases": ["bare"], "ray_actors": [], "structured_output_backend": "guidance",
            "engine_serves_merged": False}
    s = bench_gpu.summarise(plan, results)
    assert s["vs_bare"]["engine"] == {"rows_s": 0.963, "tok_s": 0.963} and "lora" not in s["vs_bare"]
    assert s["target"] == {"engine_vs_bare_rows_s": 0.963, "target": 0.95, "meets": True}
    assert s["backends"]["faster"] == "xgrammar" and s["backends"]["speedup"] == 1.311
    assert s["backends"]["faster_is_as_valid"] and s["backends"]["choose"] == "xgrammar"  # 0.1 points below: within
    assert s["identical"]["json-xgrammar_vs_json-guidance"]["identical_share"] == 0.75
    assert s["identical"]["engine_vs_json-guidance"]["identical"] is True
    assert "lora" not in s["output_digests"]
    results["json-xgrammar"]["valid_share"] = 0.99  # a point below guidance: the slower one is chosen
    assert bench_gpu.choose_backend(results)["choose"] == "guidance"


def test_validity_is_the_engines_own_judgement() -> None:
    good = '{"analysis":"收入增长","metrics":[]}'
    v = bench_gpu.validity([(good, "stop", 9), ('{"analysis":', "length", 640), ("not json", "stop", 3)], 640)
    assert v == {"valid_share": 0.3333, "rows": 3, "not_valid": {"invalid_json": 1, "length": 1}}


def test_rebuild_adds_the_phases_a_cut_process_finished(tmp_path: Path) -> None:
    """A lease that ends while a process runs: its finished phases are result lines in its log, not in the JSON."""
    plan = {"work": str(tmp_path / "gone"), "phases": ["bare", "json-guidance", "engine", "start"], "ray_actors": [],
            "structured_output_backend": "guidance", "engine_serves_merged": False,
            "processes": [{"name": "bare", "phases": ["bare"], "sets": []},
                          {"name": "lora-guidance", "phases": ["json-guidance", "engine"], "sets": []},
                          {"name": "start", "phases": ["start"], "sets": []}]}
    bare = {"rows_per_s": 80.0, "output_tok_per_s": 32000.0, "valid_share": 0.1}
    prior = {"machine": {"gpus": ["H100"]}, "command": "scripts/bench_gpu.py ...", "plan": plan,
             "results": {"bare": bare}, "identical": {}, "output_digests": {"bare": "abc"}, "complete": False}
    (tmp_path / "prior.json").write_text(json.dumps(prior))
    logs = tmp_path / "logs"
    logs.mkdir()
    guided = {"rows_per_s": 24.0, "output_tok_per_s": 6400.0, "valid_share": 1.0}
    (logs / "proc-bare.log").write_text(bench_gpu.RESULT_TAG + json.dumps({"bare": bare}) + "\n")
    (logs / "proc-lora-guidance.log").write_text("INFO engine up\n" + bench_gpu.RESULT_TAG
                                                 + json.dumps({"json-guidance": guided}) + "\nINFO killed\n")
    out = tmp_path / "rebuilt.json"
    res = bench("rebuild", str(logs), "--prior", str(tmp_path / "prior.json"), "--json-out", str(out))
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["results"]["json-guidance"] == guided and d["results"]["bare"] == bare
    assert d["vs_bare"]["json-guidance"] == {"rows_s": 0.3, "tok_s": 0.2}
    assert d["cut_phases"] == ["engine", "start"]  # cut, not failed: no phase_failed entry is made for them
    assert not any(bench_gpu.FAILED in v for v in d["results"].values())
    assert d["machine"] == {"gpus": ["H100"]} and d["output_digests"] == {"bare": "abc"}
    assert d["rebuilt_from_logs"] == ["proc-bare.log", "proc-lora-guidance.log"]


def test_compare_says_whether_the_extraction_moved_where_texts_differ() -> None:
    """GPU greedy decoding is not batch-invariant: texts differ between passes where the metrics do not."""
    one = '{"analysis":"%s","metrics":[{"metric_name":"营业收入","metric_type":"financial","score":0.9,"reason":"r"}]}'
    two = ('{"analysis":"a","metrics":[{"metric_name":"毛利率","metric_type":"financial","score":0.8,"reason":"r"},'
           '{"metric_name":"营业收入","metric_type":"financial","score":0.9,"reason":"r"}]}')
    retyped = one.replace("financial", "business")
    a = {"b0": one % "甲", "b1": one % "乙", "b2": one % "丙", "b3": "not json"}
    b = {"b0": one % "甲", "b1": one % "乙（另一措辞）", "b2": two, "b3": retyped % "丁"}
    c = bench_gpu.compare(a, b)
    assert (c["differ"], c["identical_share"]) == (3, 0.25)
    assert c["same_metrics_share"] == 0.5  # b0 (identical) and b1 (other words, same metric)
    assert c["same_count_share"] == 0.5  # b2 adds a metric; b3's first text is no answer (0 metrics) against 1
    assert bench_gpu.metric_keys(retyped % "x") == (("营业收入", "business"),)
    assert bench_gpu.metric_keys('{"analysis":"a"}') == ()  # an object without metrics: none (data.parse, lenient)
    assert bench_gpu.metric_keys("not json") is None and bench_gpu.metric_keys(None) is None


def test_rebuild_with_work_recomputes_the_row_comparisons(tmp_path: Path) -> None:
    one = '{"analysis":"%s","metrics":[]}'
    plan = {"work": "/gone", "phases": ["json-guidance", "json-uncapped"], "ray_actors": [],
            "structured_output_backend": "guidance", "engine_serves_merged": False,
            "processes": [{"name": "lora-guidance", "phases": ["json-guidance", "json-uncapped"], "sets": []}]}
    r = {"rows_per_s": 30.0, "output_tok_per_s": 6000.0, "valid_share": 1.0}
    prior = {"plan": plan, "results": {"json-guidance": r, "json-uncapped": r}, "identical": {"stale": {}},
             "output_digests": {}}
    (tmp_path / "prior.json").write_text(json.dumps(prior))
    work = tmp_path / "work"
    work.mkdir()
    (work / "texts-json-guidance.json").write_text(json.dumps({"b0": one % "x", "b1": one % "y"}))
    (work / "texts-json-uncapped.json").write_text(json.dumps({"b0": one % "x", "b1": one % "z"}))
    out = tmp_path / "out.json"
    res = bench("rebuild", str(work), "--work", str(work), "--prior", str(tmp_path / "prior.json"),
                "--json-out", str(out))
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    pair = d["identical"]["json-uncapped_vs_json-guidance"]
    assert (pair["differ"], pair["same_metrics_share"]) == (1, 1.0) and "stale" not in d["identical"]
    assert set(d["output_digests"]) == {"json-guidance", "json-uncapped"}
