"""One folder for every compile cache vLLM's start and first requests fill, so a container keeps them.

A fresh GPU machine paid about 6 minutes before steady state (issue 17, one H100, the 0.5B model with a
trained adapter): 198 s of engine start (torch.compile, CUDA graphs, flashinfer) and then 168 s of the
first generation with the GPU at 0 % and one core at 100 % while Triton compiled vLLM's LoRA kernels
(`_lora_shrink_kernel`, `_lora_expand_kernel`). The same run with warm caches started in 32 s and generated
in 31 s. Those caches are spread over five tools, each with its own variable and default under $HOME:

    vLLM (torch.compile artefacts, its own kernels)   VLLM_CACHE_ROOT            ~/.cache/vllm
    Triton (LoRA shrink/expand, fused MoE, ...)       TRITON_CACHE_DIR           ~/.triton/cache
    torch inductor (the graphs torch.compile emits)   TORCHINDUCTOR_CACHE_DIR    /tmp/torchinductor_<user>
    flashinfer (JIT-built attention and sampling)     FLASHINFER_WORKSPACE_BASE  ~ (it adds .cache/flashinfer)
    CUDA's PTX JIT, torch C++ extensions              CUDA_CACHE_PATH, TORCH_EXTENSIONS_DIR

`apply_env` points each at a subfolder of ONE folder, `compile_root()`: $REPORTMINER_COMPILE_CACHE, else
$REPORTMINER_CACHE/compile (~/.cache/reportminer/compile by default). It never replaces a variable the
user set, and it must run before vLLM (and torch, Triton) read them: the engine calls it when it starts
(`prepare_process_env`), shell scripts that start `vllm serve` themselves eval
`python -m reportminer.engine.compile_cache --shell`. Mount that one folder as a volume (Dockerfile.serve:
/cache) and a new container starts warm.

`CacheState.snapshot` counts the files and bytes under the folder; two snapshots around an engine start
(and its warm-up) say whether the cache was warm (nothing new written) or what the cold start compiled.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT_ENV = "REPORTMINER_COMPILE_CACHE"

# variable -> subfolder of compile_root()
TOOLS: dict[str, str] = {
    "VLLM_CACHE_ROOT": "vllm",
    "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "CUDA_CACHE_PATH": "cuda",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
}


def compile_root(environ: MutableMapping[str, str] | None = None) -> Path:
    """$REPORTMINER_COMPILE_CACHE, else <reportminer cache>/compile (data.models.demo.cache_root's folder)."""
    env = os.environ if environ is None else environ
    if env.get(ROOT_ENV):
        return Path(env[ROOT_ENV]).expanduser()
    if env.get("REPORTMINER_CACHE"):  # as data.models.demo.cache_root reads it, for any mapping
        base = Path(env["REPORTMINER_CACHE"]).expanduser()
    elif env.get("XDG_CACHE_HOME"):
        base = Path(env["XDG_CACHE_HOME"]).expanduser() / "reportminer"
    else:
        base = Path.home() / ".cache" / "reportminer"
    return base / "compile"


@dataclass
class CompileEnv:
    """Where each tool's cache is, and which of them this process placed (the others the user set)."""

    root: Path
    paths: dict[str, str] = field(default_factory=dict)  # variable -> folder in effect
    placed: list[str] = field(default_factory=list)  # variables set here (under root)
    kept: list[str] = field(default_factory=list)  # variables the user had set: left alone

    def line(self) -> str:
        user = f"; kept the user's {', '.join(self.kept)}" if self.kept else ""
        return f"compile cache {self.root}{user}"


def apply_env(environ: MutableMapping[str, str] | None = None) -> CompileEnv:
    """Point every tool's compile cache under compile_root(), leaving variables the user set alone.

    Call before vLLM, torch or Triton is imported (they read some of these once). Idempotent.
    """
    env = os.environ if environ is None else environ
    root = compile_root(env)
    out = CompileEnv(root=root)
    for var, sub in TOOLS.items():
        if env.get(var):
            if not env[var].startswith(str(root)):
                out.kept.append(var)
        else:
            env[var] = str(root / sub)
            out.placed.append(var)
        out.paths[var] = env[var]
    for var in out.placed:
        try:
            Path(env[var]).mkdir(parents=True, exist_ok=True)
        except OSError:  # an unwritable cache must not stop a run: the tool falls back or recompiles
            pass
    return out


def shell_exports(environ: MutableMapping[str, str] | None = None) -> str:
    """`export VAR=...` lines (the root, then what apply_env would set), for scripts that start `vllm serve`."""
    import shlex

    env = dict(os.environ if environ is None else environ)
    ce = apply_env(env)
    return "".join(f"export {var}={shlex.quote(v)}\n" for var, v in [(ROOT_ENV, str(ce.root)), *ce.paths.items()])


@dataclass
class CacheState:
    """Files and bytes under the cache folders at one moment (to tell a warm start from a cold one)."""

    files: int = 0
    bytes: int = 0
    taken_at: float = 0.0  # time.time()

    @classmethod
    def snapshot(cls, folders: list[str] | list[Path]) -> CacheState:
        files = size = 0
        for real in distinct_folders(folders):
            for dirpath, _dirs, names in os.walk(real):
                for n in names:
                    try:
                        size += os.lstat(os.path.join(dirpath, n)).st_size
                        files += 1
                    except OSError:
                        pass
        return cls(files, size, time.time())

    def written_since(self, before: CacheState) -> tuple[int, int]:
        """(new files, new bytes) since `before` (files removed meanwhile make it an underestimate)."""
        return max(0, self.files - before.files), max(0, self.bytes - before.bytes)


def distinct_folders(folders: list[str] | list[Path]) -> list[str]:
    """The existing folders, resolved, each once, and none inside another of them (walk each file once).

    vLLM points TORCHINDUCTOR_CACHE_DIR at a folder inside VLLM_CACHE_ROOT
    (torch_compile_cache/torch_aot_compile/<hash>/inductor_cache) in the process that runs its engine core,
    which is this one when VLLM_ENABLE_V1_MULTIPROCESSING=0; walking both counted that folder twice, and every
    warm start of the 1.5B model on an H100 read as "cold: 28 new files (7.8 MiB)" while `du` of the cache
    stayed at 242 MiB (docs/BENCHMARKS.md, 2026-12-06).
    """
    real = sorted({os.path.realpath(f) for f in folders if os.path.isdir(f)})
    out: list[str] = []
    for r in real:  # sorted: a parent comes before the folders inside it
        if not any(r == o or r.startswith(o.rstrip(os.sep) + os.sep) for o in out):
            out.append(r)
    return out


def cache_folders(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The folders in effect for every tool (after apply_env: under one root, or where the user put them)."""
    env = os.environ if environ is None else environ
    root = compile_root(env)
    return [env.get(var) or str(root / sub) for var, sub in TOOLS.items()]


def files_written_since(since: float, folders: list[str] | None = None, limit: int = 10_000) -> int:
    """Files under the cache folders modified after `since` (time.time()); stops counting at `limit`."""
    n = 0
    for folder in distinct_folders(folders or cache_folders()):
        for dirpath, _dirs, names in os.walk(folder):
            for name in names:
                try:
                    if os.lstat(os.path.join(dirpath, name)).st_mtime > since:
                        n += 1
                        if n >= limit:
                            return n
                except OSError:
                    pass
    return n


# A start that wrote less than this to the cache compiled nothing worth naming (a cold compile of the 0.5B
# model writes tens of MiB; a warm start may still touch a few small index files).
COLD_BYTES = 1 << 20


def describe_start(before: CacheState, after: CacheState, seconds: float, root: Path) -> str:
    """One line: was the compile cache warm, and what did this start cost."""
    files, size = after.written_since(before)
    if size < COLD_BYTES:
        return f"compile cache warm ({root}, {before.files} files): engine start and warm-up {seconds:.1f} s"
    return (f"compile cache cold ({root}): {files} new files ({size / 2**20:.1f} MiB) compiled; engine start "
            f"and warm-up {seconds:.1f} s (mount this folder to keep them for the next start)")


def main(argv: list[str] | None = None) -> int:
    """`python -m reportminer.engine.compile_cache [--shell]`: the folders (or export lines for a shell)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--shell":
        sys.stdout.write(shell_exports())
        return 0
    if args:
        print("usage: python -m reportminer.engine.compile_cache [--shell]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    ce = apply_env(env)
    print(ce.line())
    for var, path in ce.paths.items():
        print(f"  {var}={path}{'' if var in ce.placed else '  (set by you)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
