"""What the hang watchdog saw when it fired: GPU busy or idle, this process's CPU, compile-cache writes.

The watchdog (generate.Feeder, `stall_timeout_s`) ends a run whose vLLM stops finishing requests. Two
very different things look alike from the feeder: vLLM held requests it no longer advanced (the H200
stall of docs/RESULTS.md: 100 % CPU, GPU idle), and Triton compiling vLLM's LoRA kernels in the middle
of the first generation on a fresh machine (issue 17: 168 s with the GPU at 0 % and one core at 100 %;
the same rows took 31 s with warm caches). The second is a cold cache, not a hang, and its cure is a
warm-up or a mounted compile cache (engine/compile_cache.py, engine/warmup.py), not a longer timeout.
So the message names what it measured since the last finished row, and the cause that fits:

    no row finished for 905 s (12 in flight); GPU idle (0 %); CPU busy in this process (1.0 cores);
    41 files written to the compile cache meanwhile: compiling kernels? (a warm-up or a mounted compile
    cache avoids this: docs/engine.md#cold-start-warm-up-and-the-compile-cache)

`ActivityProbe.mark()` runs at every step that finished a row (reading CPU counters at most once a
second); `explain()` measures GPU and compile cache only when the watchdog fires.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from .compile_cache import cache_folders, compile_root, files_written_since

GPU_IDLE_PCT = 5  # utilisation.gpu at or below this is idle (NVML's figure: share of time a kernel ran)
CPU_BUSY_CORES = 0.5  # this process (and its engine-core children) used at least half a core on average


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (vLLM's engine core runs in a
    child process unless VLLM_ENABLE_V1_MULTIPROCESSING=0); psutil where installed (vLLM needs it)."""
    try:
        import psutil  # type: ignore[import-untyped]

        p = psutil.Process()
        total = sum(p.cpu_times()[:2])
        for c in p.children(recursive=True):
            try:
                total += sum(c.cpu_times()[:2])
            except psutil.Error:
                pass
        return float(total)
    except Exception:  # no psutil, or /proc unreadable: this process only
        t = os.times()
        return t.user + t.system


def gpu_utilisation() -> list[int] | None:
    """utilization.gpu (%) of each visible GPU: pynvml if importable, else nvidia-smi; None: no GPU seen."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            n = pynvml.nvmlDeviceGetCount()
            idx = _visible(visible, n)
            return [int(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu) for i in idx]
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    if not shutil.which("nvidia-smi"):
        return None
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
        vals = [int(x.strip()) for x in q.stdout.splitlines() if x.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not vals:
        return None
    return [vals[i] for i in _visible(visible, len(vals))]


def _visible(spec: str | None, n: int) -> list[int]:
    """Indices named by CUDA_VISIBLE_DEVICES (numbers only; UUIDs or none: every GPU)."""
    if spec:
        try:
            idx = [int(x) for x in spec.split(",") if x.strip()]
            if idx and all(0 <= i < n for i in idx):
                return idx
        except ValueError:
            pass
    return list(range(n))


def explain(seconds: float, in_flight: int, cpu_cores: float, gpu: list[int] | None, compile_files: int,
            device: str = "cuda") -> str:
    """The watchdog's message from what was measured over the silent `seconds` (a pure function: tested)."""
    parts = [f"no row finished for {seconds:.0f} s ({in_flight} in flight)"]
    if gpu is None:
        parts.append("GPU: none seen" + (" (cpu device)" if device == "cpu" else " (no NVML, no nvidia-smi)"))
        gpu_idle = None
    else:
        gpu_idle = max(gpu) <= GPU_IDLE_PCT
        parts.append(f"GPU {'idle' if gpu_idle else 'busy'} ({', '.join(f'{u} %' for u in gpu)})")
    cpu_busy = cpu_cores >= CPU_BUSY_CORES
    parts.append(f"CPU {'busy' if cpu_busy else 'idle'} in this process ({cpu_cores:.1f} cores)")
    if compile_files:
        parts.append(f"{compile_files} files written to the compile cache ({compile_root()}) meanwhile")
    msg = "; ".join(parts)
    if compile_files or (gpu_idle and cpu_busy):
        return msg + ": compiling kernels? (a warm-up or a mounted compile cache avoids this: docs/engine.md#cold-start-warm-up-and-the-compile-cache)"
    if gpu_idle is False:
        return msg + ": the GPU is still working (very long answers?); raise stall_timeout_s if this is expected"
    if cpu_busy and device == "cpu":
        return msg + ": the CPU is still computing (a large batch on few cores?); raise stall_timeout_s or set 0"
    if cpu_busy:
        return msg + ": busy on the CPU without progress (grammar work or a spinning engine loop?)"
    return msg + ": nothing is working (vLLM waiting on a lock or a dead worker?)"


class ActivityProbe:
    """What the watchdog measures from: the time of the last finished row, and the CPU seconds of this
    process (and its engine-core children) about then.

    `mark()` runs at every engine step that finished a row; it reads the CPU counters at most once a
    second (psutil walks /proc for the children), so the window is right to a second. The CPU share must
    be counted over the silent window itself, not sampled when the watchdog fires: with the engine core in
    this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) a compile runs inside `step()` on the feeder's own
    thread, which is not stepping while it measures.
    """

    CPU_EVERY_S = 1.0

    def __init__(self, device: str = "cuda"):
        self.device = device
        self._progress = self._cpu_t = time.monotonic()
        self._cpu = process_cpu_seconds()

    def mark(self) -> None:
        now = time.monotonic()
        self._progress = now
        if now - self._cpu_t >= self.CPU_EVERY_S:
            self._cpu, self._cpu_t = process_cpu_seconds(), now

    def silent_s(self) -> float:
        return time.monotonic() - self._progress

    def explain(self, in_flight: int) -> str:
        now = time.monotonic()
        silent = now - self._progress
        cpu = (process_cpu_seconds() - self._cpu) / max(1e-6, now - self._cpu_t)
        gpu = gpu_utilisation() if self.device != "cpu" else None
        files = files_written_since(time.time() - silent, cache_folders())
        return explain(silent, in_flight, cpu, gpu, files, self.device)
