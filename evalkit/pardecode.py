"""Gold and predictions JSONL decoded at the same time, each file split into byte ranges on line
boundaries, one worker process a CPU (`jsonl_chunks`), started before the caller needs the frames.

Why processes: msgspec holds the GIL while it decodes and the rows are built in Python, so threads would
take turns. A worker is a fresh interpreter running `jsonl_chunks.py` by its path (no polars, no pyarrow:
~0.04 s to start), reads its ranges through mmap and answers one msgpack message of flat columns
(`jsonl_chunks.gold_chunk` / `pred_chunk`); nothing is pickled. Results are exactly the in-process ones:
the same functions on the same bytes, with line numbers restored from each range's line count. Inputs
under `MIN_PARALLEL_BYTES` in all, and the ranges of a worker that cannot start or dies, are decoded in
this process, by the same functions. A range that holds an error answers None; the caller names it.
"""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from reportminer.data.errors import DataError

from . import jsonl_chunks

# Below this many bytes in all, ranges are decoded in this process: a worker's start (~0.1 s of CPU)
# costs more than it saves.
MIN_PARALLEL_BYTES = 32 << 20


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class FileChunks:
    """One JSONL file's decoded ranges, in file order (None where a range holds an error)."""

    file: Path
    rel: str  # its name in generated ids (data.io.relative_name)
    chunks: list[dict[str, Any] | None] = field(default_factory=list)


def _ranges(f: Path, parts: int) -> list[tuple[int, int]]:
    """`parts` byte ranges of `f` that start right after a newline (the first after a BOM)."""
    size = f.stat().st_size
    if size == 0:
        return [(0, 0)]
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        start = len(jsonl_chunks.BOM) if buf[: len(jsonl_chunks.BOM)] == jsonl_chunks.BOM else 0
        cuts = [start]
        for j in range(1, parts):
            at = max(cuts[-1], start + (size - start) * j // parts)
            nl = buf.find(b"\n", at)
            cuts.append(size if nl < 0 else nl + 1)
        cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(start, start)]


def _folder_files(p: Path) -> list[Path]:
    """The JSONL files of a folder as `data.io.jsonl_files` lists them (imported here only: data.io
    imports pyarrow, which a file given by name does not need before the workers start)."""
    if not p.is_dir():
        return []
    from reportminer.data.io import jsonl_files

    try:
        return jsonl_files(p)
    except DataError:
        return []


def _rel(root: Path, f: Path) -> str:
    """`data.io.relative_name`: a file given by name is named by its name (no data.io import for it)."""
    if not root.is_dir():
        return f.name
    from reportminer.data.io import relative_name

    return relative_name(root, f)


def score_specs(gold: str | os.PathLike | None, pred: str | os.PathLike, text: bool = False) -> list[tuple[str, Any]]:
    """The (kind, path) specs `score.score_paths` reads (`text`: with the paragraphs and reasons, for
    grounding); the CLI starts a Prefetch of them before it imports polars."""
    suffix = "+text" if text else ""
    return [*([("gold" + suffix, gold)] if gold is not None else []), ("pred" + suffix, pred)]


class Prefetch:
    """Decoding of JSONL inputs begun at construction; `get(kind, path)` waits for and returns one input.

    `specs`: (kind, path) with kind "gold" or "pred" (+ "+text": `jsonl_chunks.KINDS`); paths that are not JSONL (or not there) are left
    to the caller. `workers`: processes (default one a CPU; 1 decodes in this process, at `get`)."""

    def __init__(self, specs: list[tuple[str, str | os.PathLike]], workers: int | None = None,
                 min_bytes: int = MIN_PARALLEL_BYTES):
        self._files: dict[tuple[str, str], list[FileChunks]] = {}
        self._jobs: list[tuple[str, str, int, int]] = []  # (kind, file, start, end), one range each
        self._where: list[tuple[tuple[str, str], int]] = []  # job -> (spec key, file index)
        self._results: dict[int, dict[str, Any] | None] = {}  # job -> its answer, as it arrives
        self._cond = threading.Condition()
        self._procs: list[subprocess.Popen] = []
        self._readers: list[threading.Thread] = []
        self._assigned: set[int] = set()  # jobs given to a running worker (the others run here)
        self._specs = {(kind, str(Path(path))) for kind, path in specs}
        plan = []
        for kind, path in specs:
            p = Path(path)
            files = [p] if p.is_file() and p.suffix == ".jsonl" else _folder_files(p)
            if files:
                plan.append(((kind, str(p)), p, files))
        total = sum(f.stat().st_size for _, _, files in plan for f in files)
        self.workers = max(1, workers if workers is not None else cpu_count())
        if total < min_bytes:
            self.workers = 1
        for key, root, files in plan:
            self._files[key] = [FileChunks(f, _rel(root, f)) for f in files]
            for i, f in enumerate(files):
                for a, b in _ranges(f, self.workers):
                    self._jobs.append((key[0], str(f), a, b))
                    self._where.append((key, i))
        if self.workers > 1 and self._jobs:
            self._start()

    def _start(self) -> None:
        """One worker a CPU, each given an equal share of every file (range j of each file to worker j)."""
        n = min(self.workers, len(self._jobs))
        shares: list[list[int]] = [[] for _ in range(n)]
        per_file: dict[str, int] = {}
        for j, (_, f, _, _) in enumerate(self._jobs):
            k = per_file.get(f, 0)
            per_file[f] = k + 1
            shares[k % n].append(j)
        env = dict(os.environ)
        # The worker imports this very copy of reportminer: the folder holding `reportminer/` goes first on
        # its path (symlinks kept; with an editable install that folder has no `reportminer/` and the
        # install's finder answers, as in this process).
        pkg_parent = str(Path(sys.modules["reportminer"].__file__ or ".").parents[1])
        env["PYTHONPATH"] = os.pathsep.join(x for x in (pkg_parent, env.get("PYTHONPATH", "")) if x)
        # The worker runs jsonl_chunks.py by its path, not `-m reportminer.evalkit.jsonl_chunks`: importing
        # the package (its version lookup) and `reportminer.data` (jsonschema) took 0.12 s of each worker's
        # start; it gets the contract's numbers in its first message and imports `data.parse` only for a
        # row that needs it. (Its own folder is taken off its path: evalkit's modules are no top-level names.)
        code = f"import sys; sys.path.pop(0); import runpy; runpy.run_path({jsonl_chunks.__file__!r}, run_name='__main__')"
        contract = jsonl_chunks.contract_of_schema()
        for share in shares:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                )
            except OSError:  # no worker: the jobs it would have had run here, at `get`
                continue
            try:
                assert proc.stdin is not None
                proc.stdin.write(msgspec.msgpack.encode([contract, [self._jobs[j] for j in share]]))
                proc.stdin.close()
            except OSError:  # it died at once (a broken pipe): its jobs run here, at `get`
                proc.kill()
                proc.wait()
                continue
            self._assigned.update(share)
            self._procs.append(proc)
            # A reader a worker, so none waits on a full pipe while this process is busy elsewhere.
            reader = threading.Thread(target=self._read, args=(proc, share), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, proc: subprocess.Popen, share: list[int]) -> None:
        """Answers of one worker, in its job order; a job it did not answer (it died) is None."""
        out = proc.stdout
        assert out is not None
        try:
            for j in share:
                head = out.read(8)
                if len(head) < 8:
                    break
                body = out.read(int.from_bytes(head, "little"))
                try:
                    answer = msgspec.msgpack.decode(body)
                except msgspec.DecodeError:
                    answer = None
                with self._cond:
                    self._results[j] = answer
                    self._cond.notify_all()
        finally:
            out.close()
            proc.wait()
            with self._cond:
                for j in share:
                    self._results.setdefault(j, None)
                self._cond.notify_all()

    def covers(self, kind: str, path: str | os.PathLike) -> bool:
        """Whether this prefetch was made for `path` as `kind` (JSONL or not: other inputs have nothing
        to decode ahead)."""
        return (kind, str(Path(path))) in self._specs

    def get(self, kind: str, path: str | os.PathLike) -> list[FileChunks] | None:
        """Every file of the input `path` with its decoded ranges, or None (not prefetched, or some range
        holds an error)."""
        key = (kind, str(Path(path)))
        if key not in self._files:
            return None
        mine = [j for j, (k, _) in enumerate(self._where) if k == key]
        with self._cond:  # a reader answers every job of its worker, None where the worker died
            self._cond.wait_for(lambda: all(j in self._results for j in mine if j in self._assigned))
        for j in mine:
            if j not in self._results:  # in process (one worker, or none could start)
                self._results[j] = jsonl_chunks.run_job(*self._jobs[j])
        files = [FileChunks(fc.file, fc.rel) for fc in self._files[key]]
        for j in mine:
            files[self._where[j][1]].chunks.append(self._results[j])
        if any(c is None for fc in files for c in fc.chunks):
            return None
        return files

    def close(self) -> None:
        """Stop workers whose answers are no longer wanted (an error elsewhere) and reap them."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for reader in self._readers:
            reader.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
