"""scripts/chunk_carry.sh: carry folders sized to travel beside the working tree (the device's 64 MiB a call),
rebuilt byte for byte by the joiner the device scripts use. A throwaway git repository stands in for the
checkout; sparse files give apparent sizes without writing them."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "chunk_carry.sh"
MiB = 1024 * 1024


def sh(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    subprocess.run(["git", "init", "-q", str(r)], check=True)
    (r / ".gitignore").write_text("/.carry/\n/big/\n")
    with open(r / "tracked.bin", "wb") as f:  # 10 MiB of tree (untracked, not ignored: it travels too)
        f.truncate(10 * MiB)
    (r / "big").mkdir()
    with open(r / "big" / "ignored.bin", "wb") as f:  # ignored: does not travel, not counted
        f.truncate(500 * MiB)
    return r


def test_folder_size_follows_the_tree_and_the_files_rebuild(repo: Path) -> None:
    assert sh(repo, "--tree").stdout.strip() == "11"  # 10 MiB + .gitignore, rounded up
    src = repo / "big" / "payload.bin"
    src.write_bytes(os.urandom(3 * MiB + 123))
    small = repo / "big" / "small.whl"
    small.write_bytes(b"w" * 1000)
    p = sh(repo, str(src), str(small))
    assert p.returncode == 0, p.stderr
    assert "each <= 49 MiB: 64 - tree 11 - margin 4" in p.stdout  # 64 - 11 - 4
    # a fixed size splits: 1 MiB folders hold the payload in four pieces, the small file beside the last
    p = sh(repo, str(src), str(small), env={"CHUNK_MIB": "1", "CARRY": ".carry-x"})
    assert p.returncode == 0, p.stderr
    assert "added /.carry-x/" in p.stdout and sh(repo, "--tree").stdout.strip() == "11"  # it does not travel
    parts = sorted((repo / ".carry-x").glob("p*"))
    assert len(parts) == 4 and all(sum(f.stat().st_size for f in d.iterdir() if f.name != "MANIFEST") <= MiB
                                   for d in parts)
    stage = repo / "stage"
    stage.mkdir()
    for d in parts:
        for f in d.iterdir():
            (stage / f.name).write_bytes(f.read_bytes())
    join = 'for f in *.chunk000; do b=${f%.chunk000}; cat "$b".chunk* > "$b" && rm "$b".chunk*; done; sha256sum -c MANIFEST'
    assert subprocess.run(["bash", "-c", join], cwd=stage, capture_output=True, timeout=60).returncode == 0
    assert hashlib.sha256((stage / "payload.bin").read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_fits_checks_each_call_against_the_limit(repo: Path) -> None:
    for name, size in [("a", 40), ("b", 13), ("c", 60)]:
        with open(repo / "big" / name, "wb") as f:
            f.truncate(size * MiB)
    ok = sh(repo, "--fits", "big/a,big/b")
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stdout + ok.stderr
    bad = sh(repo, "--fits", "big/a", "big/c")
    assert bad.returncode == 1 and "TOO BIG" in bad.stdout
    p = sh(repo, str(repo / "big" / "a"), env={"MARGIN_MIB": "60"})
    assert p.returncode == 1 and "no room" in p.stderr
