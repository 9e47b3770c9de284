"""Cold start without vLLM (seconds): the one compile-cache folder (engine/compile_cache.py) and what the
watchdog says when it fires (engine/stall.py). The warm-up itself and the watchdog inside a real engine are
in tests/test_engine_run.py (real vLLM CPU)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reportminer.engine import compile_cache as cc
from reportminer.engine import stall


def test_every_tool_cache_goes_under_one_folder_unless_the_user_placed_it(tmp_path: Path) -> None:
    env = {"REPORTMINER_CACHE": str(tmp_path / "rm"), "TRITON_CACHE_DIR": "/mine/triton"}
    ce = cc.apply_env(env)
    root = tmp_path / "rm" / "compile"
    assert ce.root == root and cc.compile_root(env) == root
    assert env["VLLM_CACHE_ROOT"] == str(root / "vllm") and env["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert env["FLASHINFER_WORKSPACE_BASE"] == str(root / "flashinfer")
    assert env["TRITON_CACHE_DIR"] == "/mine/triton" and ce.kept == ["TRITON_CACHE_DIR"]  # never overridden
    assert set(ce.placed) == set(cc.TOOLS) - {"TRITON_CACHE_DIR"}
    assert (root / "vllm").is_dir() and not (root / "triton").exists()
    again = cc.apply_env(env)  # idempotent: what it placed counts as neither placed nor the user's now
    assert again.placed == [] and again.kept == ["TRITON_CACHE_DIR"] and again.paths == ce.paths
    # REPORTMINER_COMPILE_CACHE names the folder itself
    env2 = {"REPORTMINER_COMPILE_CACHE": str(tmp_path / "vol"), "REPORTMINER_CACHE": str(tmp_path / "rm")}
    assert cc.apply_env(env2).root == tmp_path / "vol" and env2["TRITON_CACHE_DIR"] == str(tmp_path / "vol" / "triton")


def test_shell_exports_for_scripts_that_start_vllm_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in cc.TOOLS and k != cc.ROOT_ENV}
    env["REPORTMINER_CACHE"] = str(tmp_path)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "own")
    p = subprocess.run([sys.executable, "-m", "reportminer.engine.compile_cache", "--shell"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = dict(x.removeprefix("export ").split("=", 1) for x in p.stdout.splitlines())
    assert set(lines) == {cc.ROOT_ENV, *cc.TOOLS} and lines[cc.ROOT_ENV] == str(tmp_path / "compile")
    assert lines["VLLM_CACHE_ROOT"] == str(tmp_path / "compile" / "vllm")
    assert lines["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "own")
    out = subprocess.run(["bash", "-c", f"{p.stdout}echo $TRITON_CACHE_DIR"], capture_output=True, text=True)
    assert out.stdout.strip() == str(tmp_path / "compile" / "triton")


def test_a_start_that_wrote_nothing_is_warm_and_one_that_compiled_says_what(tmp_path: Path) -> None:
    folders = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a")]  # a folder named twice counts once
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "k1.so").write_bytes(b"1" * 100)
    before = cc.CacheState.snapshot(folders)
    assert (before.files, before.bytes) == (1, 100)
    (tmp_path / "a" / "x" / "index.json").write_text("{}")  # a warm start may touch a small file
    same = cc.CacheState.snapshot(folders)
    assert cc.describe_start(before, same, 31.9, tmp_path).startswith(f"compile cache warm ({tmp_path}, 1 files)")
    before = same
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "k2.cubin").write_bytes(b"2" * (3 * 2**20))
    after = cc.CacheState.snapshot(folders)
    assert after.written_since(before) == (1, 3 * 2**20)
    line = cc.describe_start(before, after, 198.04, tmp_path)
    assert line.startswith(f"compile cache cold ({tmp_path}): 1 new files (3.0 MiB) compiled") and "198.0 s" in line


def test_a_cache_folder_inside_another_counts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM re-points TORCHINDUCTOR_CACHE_DIR inside VLLM_CACHE_ROOT in the process running its engine core: a
    warm start read as 'cold: 28 new files (7.8 MiB)' because the second snapshot walked that folder twice."""
    root = tmp_path / "compile"
    for var, sub in cc.TOOLS.items():
        monkeypatch.setenv(var, str(root / sub))
    nested = root / "vllm" / "torch_compile_cache" / "torch_aot_compile" / "abc" / "inductor_cache"
    nested.mkdir(parents=True)
    (nested / "graph.py").write_bytes(b"g" * (2 * 2**20))
    before_folders = cc.cache_folders()
    before = cc.CacheState.snapshot(before_folders)
    assert (before.files, before.bytes) == (1, 2 * 2**20)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(nested))  # what vLLM does at start
    after = cc.CacheState.snapshot(cc.cache_folders())
    assert after.written_since(before) == (0, 0)
    assert cc.describe_start(before, after, 86.9, root).startswith("compile cache warm")
    assert cc.distinct_folders([str(nested), str(root / "vllm"), str(root / "vllm") + "2"]) == [
        str(root / "vllm")]  # vllm2 does not exist; a sibling whose name merely starts alike would stay
    (root / "vllm2").mkdir()
    assert cc.distinct_folders([str(nested), str(root / "vllm"), str(root / "vllm2")]) == [
        str(root / "vllm"), str(root / "vllm2")]
    assert cc.files_written_since(0.0, cc.cache_folders()) == 1


@pytest.mark.parametrize("gpu, cpu, files, device, expect", [
    ([0], 1.0, 0, "cuda", "GPU idle (0 %); CPU busy in this process (1.0 cores): compiling kernels?"),
    ([0], 0.9, 41, "cuda", "41 files written to the compile cache"),
    ([97], 1.0, 0, "cuda", "GPU busy (97 %); CPU busy in this process (1.0 cores): the GPU is still working"),
    ([0], 0.0, 0, "cuda", "GPU idle (0 %); CPU idle in this process (0.0 cores): nothing is working"),
    (None, 1.9, 0, "cpu", "GPU: none seen (cpu device); CPU busy in this process (1.9 cores): the CPU is still"),
    (None, 0.8, 0, "cuda", "GPU: none seen (no NVML, no nvidia-smi); CPU busy in this process (0.8 cores): busy on"),
])
def test_the_watchdog_message_names_what_it_measured_and_the_cause_that_fits(gpu, cpu, files, device, expect) -> None:
    msg = stall.explain(905.4, 12, cpu, gpu, files, device)
    assert msg.startswith("no row finished for 905 s (12 in flight); ")
    assert expect in msg, msg
    assert ("compiling kernels?" in msg) == (files > 0 or (gpu == [0] and cpu >= stall.CPU_BUSY_CORES))


def test_the_probe_counts_cpu_over_the_silent_window_and_compile_cache_writes(tmp_path: Path, monkeypatch) -> None:
    """A busy thread in this process (as a compile inside `step()` would be) and a kernel file written
    during the silence: the probe measures both, though it never runs during the silence itself."""
    monkeypatch.setenv(cc.ROOT_ENV, str(tmp_path))
    for var in cc.TOOLS:
        monkeypatch.delenv(var, raising=False)
    probe = stall.ActivityProbe(device="cpu")
    stop = time.monotonic() + 0.6

    def spin() -> None:
        while time.monotonic() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    (tmp_path / "triton" / "ab12").mkdir(parents=True)
    (tmp_path / "triton" / "ab12" / "_lora_shrink_kernel.cubin").write_bytes(b"\0" * 10)
    t.join()
    msg = probe.explain(in_flight=3)
    assert re.match(r"no row finished for \d+ s \(3 in flight\); ", msg), msg  # 0.6 s of spin, more under load
    assert "GPU: none seen (cpu device)" in msg
    assert f"1 files written to the compile cache ({tmp_path}) meanwhile: compiling kernels?" in msg
    assert re.search(r"; CPU (busy|idle) in this process \(\d+\.\d cores\)", msg), msg
    probe.mark()  # a finished row: the window starts again and the old file no longer counts
    assert "compile cache" not in probe.explain(in_flight=0)


def test_cpu_seconds_count_this_process_threads() -> None:
    before = stall.process_cpu_seconds()
    stop = time.process_time() + 0.2
    t = threading.Thread(target=lambda: [None for _ in iter(lambda: time.process_time() >= stop, True)])
    t.start()
    t.join()
    assert stall.process_cpu_seconds() - before >= 0.15  # CPU time, so the machine's load does not matter


def test_gpu_utilisation_is_none_without_a_gpu() -> None:
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("a GPU machine")
    assert stall.gpu_utilisation() is None


# ---- the levers as settings (engine/config.py), resolved without vLLM ----------------------------------------


def _cfg(tiny_model: Path, **kw):
    from reportminer.engine import EngineConfig

    return EngineConfig(model=str(tiny_model), **kw)


def test_the_adapter_is_merged_only_when_asked(tiny_model: Path, tiny_adapter: Path, tiny_adapter_b: Path) -> None:
    one = {"p": str(tiny_adapter)}
    assert _cfg(tiny_model, adapters=one, device="cuda").resolve().merge_adapter is False  # off until measured
    assert _cfg(tiny_model, adapters=one, device="cuda", merge_adapter=True).resolve().merge_adapter is True
    assert _cfg(tiny_model, adapters=one, device="cpu").resolve().merge_adapter is False  # CPU keeps LoRA
    assert _cfg(tiny_model, adapters=one, device="cuda", include_base=True).resolve().merge_adapter is False
    assert _cfg(tiny_model, adapters={**one, "q": str(tiny_adapter_b)}, device="cuda").resolve().merge_adapter is False
    assert _cfg(tiny_model, device="cuda").resolve().merge_adapter is False  # no adapter: nothing to merge
    assert _cfg(tiny_model, adapters=one, device="cuda", merge_adapter=False).resolve().merge_adapter is False
    ident = _cfg(tiny_model, adapters=one, device="cuda", merge_adapter=True).resolve()
    from reportminer.engine.decoding import decoding_identity

    assert decoding_identity(ident, [])["merge_adapter"] is True  # a merged run never mixes with LoRA rows


def test_fp8_is_a_vllm_keyword_on_cuda_and_refused_on_cpu(tiny_model: Path) -> None:
    from reportminer.data.errors import ConfigError

    c = _cfg(tiny_model, device="cuda", quantization="fp8").resolve()
    assert c.vllm_kwargs()["quantization"] == "fp8" and c.result_settings()["quantization"] == "fp8"
    plain = _cfg(tiny_model, device="cuda").resolve()
    assert "quantization" not in plain.vllm_kwargs() and "quantization" not in plain.result_settings()
    with pytest.raises(ConfigError, match=r"quantization fp8: needs a CUDA GPU .* the cpu build cannot run it"):
        _cfg(tiny_model, device="cpu", quantization="fp8").resolve()
    with pytest.raises(ConfigError, match="quantization"):
        _cfg(tiny_model).with_sets(["quantization=int4"])


def test_structured_output_options_reach_vllm_and_the_run_identity(tiny_model: Path) -> None:
    from reportminer.data.errors import ConfigError

    c = _cfg(tiny_model, device="cuda").with_sets(["structured_output_options={disable_additional_properties: true}"])
    r = c.resolve()
    assert r.vllm_kwargs()["structured_outputs_config"] == {
        "backend": "guidance", "disable_any_whitespace": True, "disable_additional_properties": True}
    assert r.result_settings()["structured_output_options"] == {"disable_additional_properties": True}
    assert "structured_output_options" not in _cfg(tiny_model, device="cuda").resolve().result_settings()
    with pytest.raises(ConfigError, match="structured_output_options: unknown jump_forward"):
        _cfg(tiny_model, device="cuda", structured_output_options={"jump_forward": True}).resolve()


def test_warm_up_is_on_for_cuda_and_off_on_cpu_unless_set(tiny_model: Path) -> None:
    from reportminer.engine.generate import warmup_wanted

    assert warmup_wanted(_cfg(tiny_model, device="cuda")) and not warmup_wanted(_cfg(tiny_model, device="cpu"))
    assert warmup_wanted(_cfg(tiny_model, device="cpu", warmup=True))
    assert not warmup_wanted(_cfg(tiny_model, device="cuda", warmup=False))


def test_cuda_graph_capture_settings_become_compilation_config_on_cuda_only(tiny_model: Path) -> None:
    c = _cfg(tiny_model, device="cuda").with_sets(["cudagraph_mode=PIECEWISE", "max_cudagraph_capture_size=256"])
    assert c.resolve().vllm_kwargs()["compilation_config"] == {"cudagraph_mode": "PIECEWISE",
                                                               "max_cudagraph_capture_size": 256}
    assert "compilation_config" not in _cfg(tiny_model, device="cuda").resolve().vllm_kwargs()  # vLLM's own
    assert "compilation_config" not in c.override(device="cpu").resolve().vllm_kwargs()  # no CUDA graphs there
    assert "compilation_config" not in c.override(enforce_eager=True).resolve().vllm_kwargs()


def test_lora_graphs_captured_once_only_when_asked_and_only_with_adapters(tiny_model: Path, tiny_adapter: Path) -> None:
    one = {"p": str(tiny_adapter)}
    off = _cfg(tiny_model, adapters=one, device="cuda").with_sets(["cudagraph_specialize_lora=false"])
    assert off.resolve().vllm_kwargs()["compilation_config"] == {"cudagraph_specialize_lora": False}
    assert "compilation_config" not in _cfg(tiny_model, adapters=one, device="cuda").resolve().vllm_kwargs()
    bare = _cfg(tiny_model, device="cuda").with_sets(["cudagraph_specialize_lora=false"])
    assert "compilation_config" not in bare.resolve().vllm_kwargs()  # no LoRA: vLLM ignores it; so do we
