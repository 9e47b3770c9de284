"""The two Dockerfiles and their locks, checked without Docker (none runs here; hadolint runs in scripts/lint.sh).

What an image must hold (issue 8, item 5): the versions the H200 runs used, every package pinned, a non-root
user, no model inside, a health check on the server; and each lock must still carry every pin of its .in file
(a hand edit of one without rerunning scripts/lock_images.py fails here). The serve image also carries
pyproject's `ray` extra, so `engine run --backend ray` runs in it and it can join a Ray cluster as a worker.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s#;]+)")  # name[extras]==version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / f"{name}.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"docker/{name}.lock: not an exact pin: {line!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in (REPO / dockerfile).read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest))
            buf = ""
    return out


@pytest.mark.parametrize("name, expected", [
    ("serve", {"vllm": "0.27.1", "torch": "2.11.0", "transformers": "5.17.0", "xgrammar": "0.2.9",
               "flashinfer-python": "0.6.16.post3", "llguidance": "1.7.6", "ray": "2.60.0"}),
    ("train", {"torch": "2.11.0", "transformers": "5.17.0", "peft": "0.21.0", "accelerate": "1.15.0",
               "trl": "1.16.0", "bitsandbytes": "0.50.2", "datasets": "5.2.0"}),
])
def test_lock_holds_the_gpu_runs_versions(name: str, expected: dict[str, str]) -> None:
    pins = lock_pins(name)
    assert {k: pins.get(k) for k in expected} == expected
    # the project's own dependencies are in the lock too (reportminer is installed --no-deps)
    assert {"pyarrow", "jsonschema", "click", "pyyaml", "tqdm", "rich", "gguf"} <= pins.keys()


@pytest.mark.parametrize("name", ["serve", "train"])
def test_lock_carries_every_pin_of_its_in_file(name: str) -> None:
    pins = lock_pins(name)
    text = (REPO / "docker" / f"{name}.in").read_text()
    wanted = [PIN.match(line.removeprefix("#+").strip()) for line in text.splitlines()
              if not line.startswith("#") or line.startswith("#+")]
    wanted_pins = {_norm(m.group(1)): m.group(2) for m in wanted if m}
    assert wanted_pins, f"docker/{name}.in has no pins"
    stale = {k: (v, pins.get(k)) for k, v in wanted_pins.items() if pins.get(k) != v}
    assert not stale, f"docker/{name}.lock is stale (rerun scripts/lock_images.py): {stale}"
    dropped = [line[2:].split("#")[0].strip() for line in text.splitlines() if line.startswith("#-")]
    assert not [k for k in pins if any(k.startswith(_norm(d)) for d in dropped)]


@pytest.mark.parametrize("dockerfile, lock", [("Dockerfile.serve", "serve"), ("Dockerfile.train", "train")])
def test_dockerfile_rules(dockerfile: str, lock: str) -> None:
    ins = instructions(dockerfile)
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1 and re.match(r"nvidia/cuda:13\.0\.\d+-\w+-ubuntu24\.04@sha256:[0-9a-f]{64}$", froms[0]), froms
    runs = " ".join(a for i, a in ins if i == "RUN")
    # Triton's run-time compilation: a C compiler and Python.h
    assert "build-essential" in runs and "python3-dev" in runs
    # the lock installed as it is, nothing resolved at build time
    assert f"docker/{lock}.lock" in " ".join(a for i, a in ins if i == "COPY")
    assert re.search(rf"pip install --no-cache-dir --no-deps -r /tmp/{lock}\.lock", runs)
    # a non-root user, by number, is the last USER
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root") and users[-1].split(":")[0].isdigit()
    # no model baked in: nothing copied but the project's sources, its lock and scripts
    copied = [src for i, a in ins if i == "COPY" for src in [t for t in a.split() if not t.startswith("--")][:-1]]
    allowed = {"pyproject.toml", "README.md", "pkg", "data", "engine", "trainer", "evalkit", f"docker/{lock}.lock",
               "scripts/serve.sh", "docker/serve-guard.sh"}
    assert copied and set(copied) <= allowed, copied
    assert not re.search(r"(safetensors|\.gguf|huggingface-cli|hf download|snapshot_download|fetch-model)", runs)


def test_serve_image_serves_with_a_health_check() -> None:
    ins = dict((i, a) for i, a in instructions("Dockerfile.serve"))
    assert "/health" in ins["HEALTHCHECK"] and "127.0.0.1" in ins["HEALTHCHECK"]
    assert "/app/scripts/serve.sh" in ins["CMD"]
    env = " ".join(a for i, a in instructions("Dockerfile.serve") if i == "ENV")
    assert "HOST=0.0.0.0" in env and "PORT=8000" in env and "MODEL=/model" in env


def test_serve_image_carries_the_ray_extra() -> None:
    """Every pin of pyproject's `ray` extra is in the serve lock at that version, with what its extras
    (ray[data]) require; and Dockerfile.serve checks at build time the versions the lock says."""
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    ray_extra = [Requirement(r) for r in
                 tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]]
    pins = lock_pins("serve")
    assert ray_extra and all(r.specifier and len(r.specifier) == 1 for r in ray_extra), ray_extra
    assert {_norm(r.name): pins.get(_norm(r.name)) for r in ray_extra} == \
        {_norm(r.name): next(iter(r.specifier)).version for r in ray_extra}
    ray = next(r for r in ray_extra if _norm(r.name) == "ray")
    assert ray.extras == {"data"}
    # What ray[data] pulls in (pandas, pyarrow, numpy, fsspec), read from the installed ray's own metadata
    # when it is that version (the `ray` extra installed here), else the four names ray 2.60.0 declares.
    try:
        installed = metadata.version("ray")
    except metadata.PackageNotFoundError:
        installed = None
    if installed == pins.get("ray"):
        reqs = [Requirement(r) for r in metadata.requires("ray") or []]
        needs = {_norm(r.name) for r in reqs
                 if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ray.extras)}
    else:
        needs = {"numpy", "pandas", "pyarrow", "fsspec", "msgpack", "click", "filelock", "jsonschema"}
    assert {"pandas", "pyarrow", "numpy", "fsspec"} <= needs
    assert not needs - pins.keys(), f"docker/serve.lock lacks ray[data]'s {sorted(needs - pins.keys())}"
    # The build-time assertion of Dockerfile.serve names the lock's versions, ray's among them.
    runs = " ".join(a for i, a in instructions("Dockerfile.serve") if i == "RUN")
    asserted = dict(re.findall(r"got\['([\w.-]+)'\] == '([^']+)'", runs))
    assert asserted.get("ray") == pins["ray"] and "import ray.data" in runs
    assert {k: pins.get(_norm(k)) for k in asserted} == asserted


def test_serve_image_enters_through_the_key_guard() -> None:
    ins = dict((i, a) for i, a in instructions("Dockerfile.serve"))
    assert json.loads(ins["ENTRYPOINT"]) == ["/usr/bin/tini", "--", "/app/docker/serve-guard.sh"]
    assert "docker/serve-guard.sh /app/docker/serve-guard.sh" in " ".join(a for i, a in instructions("Dockerfile.serve") if i == "COPY")


@pytest.mark.parametrize("env, argv, starts", [
    ({"HOST": "0.0.0.0"}, ["serve.sh"], False),                          # the image's default: refused
    ({"HOST": "0.0.0.0", "VLLM_API_KEY": "k"}, ["serve.sh"], True),
    ({"HOST": "0.0.0.0", "ALLOW_NO_API_KEY": "1"}, ["serve.sh"], True),  # the explicit opt-out
    ({"HOST": "0.0.0.0", "ALLOW_NO_API_KEY": "yes"}, ["serve.sh"], False),  # only 1 opts out
    ({"HOST": "127.0.0.1"}, ["serve.sh"], True),
    ({}, ["serve.sh"], True),                                            # serve.sh's own default is 127.0.0.1
    ({"HOST": "0.0.0.0"}, ["vllm", "serve", "/model"], False),           # vllm serve: every interface by default
    ({"HOST": "127.0.0.1"}, ["vllm", "serve", "/model"], False),         # HOST does not bind vllm serve
    ({"HOST": "0.0.0.0"}, ["vllm", "serve", "/model", "--host", "127.0.0.1"], True),
    ({}, ["vllm", "serve", "/model", "--host=10.0.0.5"], False),
    ({}, ["vllm", "serve", "/model", "--api-key", "k"], True),
    ({"HOST": "0.0.0.0"}, ["serve.sh", "/model", "--", "--api-key", "k"], True),
    ({"HOST": "0.0.0.0"}, ["engine", "run", "--input", "/in"], True),    # not a server: no key needed
])
def test_serve_guard_refuses_a_public_server_without_a_key(tmp_path: Path, env: dict, argv: list, starts: bool) -> None:
    for name in ("serve.sh", "vllm", "engine"):
        f = tmp_path / name
        f.write_text('#!/bin/sh\necho "started $0 $*"\n')
        f.chmod(0o755)
    argv = [str(tmp_path / argv[0]), *argv[1:]]
    res = subprocess.run(["sh", str(REPO / "docker" / "serve-guard.sh"), *argv], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], **env}, timeout=30)
    if starts:
        assert res.returncode == 0 and res.stdout.strip() == f"started {' '.join(argv)}", res.stderr
    else:
        assert res.returncode == 2 and res.stdout == "", res.stdout
        assert "refused" in res.stderr and "without an API key" in res.stderr and "ALLOW_NO_API_KEY=1" in res.stderr


def test_gpu_extra_pins_what_the_serve_image_runs() -> None:
    """`pip install ".[gpu]"` gets the image's vllm and transformers, exactly (torch follows vllm's metadata:
    scripts/setup.sh --gpu installs the lock's)."""
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    gpu = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]]
    pins = {_norm(r.name): str(r.specifier) for r in gpu if r.name != "reportminer"}
    lock = lock_pins("serve")
    assert pins == {"vllm": f"=={lock['vllm']}", "transformers": f"=={lock['transformers']}"}


def test_setup_gpu_path_installs_the_lock_as_the_image_does(tmp_path: Path) -> None:
    text = (REPO / "scripts" / "setup.sh").read_text()
    # the same command as the Dockerfile, then the project under the lock as constraints
    assert 'pip install -q --no-deps -r "$lock"' in text and '-e ".[$GPU_EXTRAS]" -c "$constraints"' in text
    assert "pip install --no-cache-dir --no-deps -r /tmp/serve.lock" in (REPO / "Dockerfile.serve").read_text()
    # argument handling, run from a copy so that nothing is installed anywhere
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text(text)
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), "--gpus"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "unknown argument: --gpus (--gpu, --gpu-train, --help)" in res.stderr
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "scripts/setup.sh --gpu " in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scripts"]  # no .venv was made
