"""Issue 9's catalogue of bad input, faults and misuse, engine side: one test per case, message and exit code.

Cases decided before vLLM starts (adapters, --out, shard schemas, ids, overwrite, discovery) go through the
real `engine run` CLI (click's runner, in process) with a tripwire in place of the engine class: if one of
them started vLLM the test would fail, which proves the check runs before `Engine.start`. Cases that need
rows (content-hash rerun, symlinked folders, prune, overwrite of an edited manifest, JSONL input, a full
disk) share one real vLLM CPU engine on the tiny model and one first run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reportminer.data.errors import EXIT_DATA, EXIT_FAILED, EXIT_REFUSED, ConfigMismatch, RunFailed, error_line
from reportminer.data.io import jsonl_to_table, read_table, write_parquet, write_shards
from reportminer.engine import engines, runner
from reportminer.engine.cli import main
from reportminer.engine.config import EngineConfig
from reportminer.engine.run_manifest import MANIFEST_NAME, RunManifest
from reportminer.engine.shards import find_shards

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "demo.jsonl"


# ---- helpers ------------------------------------------------------------------------------------------


def engine_cli(*args: str):
    """`engine run ARGS --quiet` in process; returns click's Result (exit_code, stdout, stderr)."""
    r = CliRunner().invoke(main, ["run", *args, "--quiet", "--max-tokens", "8", "--max-model-len", "1024"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def one_line(r) -> str:
    """The error line of a refused run: exactly one line on stderr starting with `engine:`, no traceback."""
    lines = [x for x in r.stderr.splitlines() if x.startswith("engine:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture
def shards(tmp_path) -> Path:
    d = tmp_path / "in"
    write_shards(jsonl_to_table(DEMO), d, rows_per_shard=6)
    return d


def _copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); not available here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def _open_files_under(path: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path) + "/"):
            out.append(target)
    return out


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], check=False)  # busy: detach now, freed when last file closes


# ---- adapters (exit 2, named, before vLLM) ------------------------------------------------------------


def test_adapter_rank_above_explicit_max_lora_rank_is_refused(no_engine, tiny_model, tiny_adapter, shards, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "r32")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, "r": 32}))
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
                   "--adapter", f"big={ad}", "--max-lora-rank", "16")
    assert r.exit_code == EXIT_REFUSED
    line = one_line(r)
    assert f"adapter big={ad}" in line and "LoRA rank 32 exceeds max_lora_rank 16" in line
    assert not (tmp_path / "out").exists()  # refused before --out was touched


def test_corrupt_adapter_config_is_named(no_engine, tiny_model, tiny_adapter, shards, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "badcfg")
    (ad / "adapter_config.json").write_text('{"r": 8, "target_modules": [')
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--adapter", f"v={ad}")
    assert r.exit_code == EXIT_REFUSED
    assert f"{ad / 'adapter_config.json'}: cannot parse" in one_line(r)


def test_adapter_without_weights_is_refused(no_engine, tiny_model, tiny_adapter, shards, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "noweights")
    (ad / "adapter_model.safetensors").unlink()
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--adapter", f"v={ad}")
    assert r.exit_code == EXIT_REFUSED
    assert f"adapter v={ad}: no weights (adapter_model.safetensors missing)" in one_line(r)


def test_truncated_adapter_weights_are_named(no_engine, tiny_model, tiny_adapter, shards, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "trunc")
    w = ad / "adapter_model.safetensors"
    size = w.stat().st_size
    with open(w, "r+b") as fh:
        fh.truncate(size - 1000)
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--adapter", f"v={ad}")
    assert r.exit_code == EXIT_REFUSED
    line = one_line(r)
    assert str(w) in line and f"the file has {size - 1000} bytes" in line and "truncated" in line


def test_corrupt_adapter_manifest_is_named(no_engine, tiny_model, tiny_adapter, shards, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "badman")
    (ad / "reportminer_adapter.json").write_text("{not json")
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--adapter", f"v={ad}")
    assert r.exit_code == EXIT_REFUSED
    assert f"adapter v={ad}: {ad / 'reportminer_adapter.json'}: cannot parse the adapter manifest" in one_line(r)


def test_extract_refuses_a_truncated_adapter_the_same_way(no_engine, tiny_model, tiny_adapter, tmp_path):
    ad = _copy_adapter(tiny_adapter, tmp_path / "trunc")
    w = ad / "adapter_model.safetensors"
    with open(w, "r+b") as fh:
        fh.truncate(100)
    r = CliRunner().invoke(main, ["extract", "--text", "营业收入增长。", "--model", str(tiny_model), "--adapter", f"v={ad}"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert r.exit_code == EXIT_REFUSED
    assert f"adapter v={ad}: {w}: header length" in one_line(r)


# ---- --out (exit 2) -----------------------------------------------------------------------------------


def test_out_below_a_regular_file_is_refused(no_engine, tiny_model, shards, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    r = engine_cli("--input", str(shards), "--out", str(blocker / "out"), "--model", str(tiny_model))
    assert r.exit_code == EXIT_REFUSED
    assert f"--out {blocker / 'out'}: lies below {blocker}, which is a file, not a folder" in one_line(r)
    assert blocker.read_text() == "x"


def test_read_only_out_is_refused(no_engine, tiny_model, shards, tmp_path):
    out = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through mode bits: a read-only mount is what says no
        _mount_tmpfs(out, "ro,size=64k")
    else:
        out.mkdir()
        out.chmod(0o555)
    try:
        r = engine_cli("--input", str(shards), "--out", str(out), "--model", str(tiny_model))
        assert r.exit_code == EXIT_REFUSED
        line = one_line(r)
        assert f"--out {out}: not writable" in line and ("Read-only" in line or "Permission" in line)
    finally:
        _umount(out) if os.geteuid() == 0 else out.chmod(0o755)


# ---- input shards -------------------------------------------------------------------------------------


def test_integer_paragraph_column_fails_its_shard_with_the_file_named(no_engine, tiny_model, tmp_path):
    d = tmp_path / "in"
    write_parquet(pa.table({"id": ["a", "b"], "chapter_title": ["t", "t"], "paragraph": [123, 456]}), d / "ints.parquet")
    r = engine_cli("--input", str(d), "--out", str(tmp_path / "out"), "--model", str(tiny_model))
    assert r.exit_code == EXIT_DATA
    assert f"{d / 'ints.parquet'}: column type(s) paragraph is int64" in r.stderr
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()  # nothing ran, nothing recorded as done


def test_jsonl_with_integer_paragraph_names_file_and_line(no_engine, tiny_model, tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"id": "a", "paragraph": "文本", "chapter_title": "t"}\n{"id": "b", "paragraph": 42}\n', encoding="utf-8")
    r = engine_cli("--input", str(f), "--out", str(tmp_path / "out"), "--model", str(tiny_model))
    assert r.exit_code == EXIT_DATA
    assert f"{f}:2: paragraph is a int, not text" in r.stderr


def test_folder_with_both_jsonl_and_parquet_is_refused(no_engine, tiny_model, shards, tmp_path):
    shutil.copy(DEMO, shards / "extra.jsonl")
    r = engine_cli("--input", str(shards), "--out", str(tmp_path / "out"), "--model", str(tiny_model))
    assert r.exit_code == EXIT_DATA
    assert "holds both *.jsonl (1, e.g. extra.jsonl) and *.parquet files (2" in one_line(r)


def test_folder_without_shards_says_what_is_there(no_engine, tiny_model, tmp_path):
    d = tmp_path / "csvs"
    d.mkdir()
    (d / "a.csv").write_text("id,paragraph\n1,x\n")
    r = engine_cli("--input", str(d), "--out", str(tmp_path / "out"), "--model", str(tiny_model))
    assert r.exit_code == EXIT_DATA
    assert ("no *.parquet or *.jsonl shards under this folder (1 .csv file(s) here: the engine reads Parquet shards "
            "or seed-format JSONL") in one_line(r)


def test_strict_ids_refuses_null_and_duplicate_ids_before_the_engine(no_engine, tiny_model, tmp_path):
    d = tmp_path / "in"
    write_parquet(pa.table({"id": ["x", None, "y"], "chapter_title": ["t"] * 3, "paragraph": ["p"] * 3}), d / "a.parquet")
    write_parquet(pa.table({"id": ["x", "z"], "chapter_title": ["t"] * 2, "paragraph": ["p"] * 2}), d / "b.parquet")
    r = engine_cli("--input", str(d), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--strict-ids")
    assert r.exit_code == EXIT_DATA
    line = one_line(r)
    assert "--strict-ids: 1 null id(s) (e.g. a.parquet row 2); 1 id(s) on 2 rows are not unique (e.g. 'x' x2)" in line


def test_symlink_loop_and_a_folder_linked_twice_are_reported_once(tmp_path):
    d = tmp_path / "in"
    write_shards(jsonl_to_table(DEMO), d / "real", rows_per_shard=6)
    (d / "real" / "loop").symlink_to(d, target_is_directory=True)  # real/loop -> in: a loop
    (d / "again").symlink_to(d / "real", target_is_directory=True)  # the same folder a second time
    shards, notes = find_shards(d)
    assert [s.rel for s in shards] == ["again/shard-00000.parquet", "again/shard-00001.parquet"]
    assert len(notes) == 2
    assert sum("symlink loop" in n for n in notes) == 1 and sum("reached twice" in n for n in notes) == 1


# ---- overwrite never deletes an input -----------------------------------------------------------------


def test_single_file_input_inside_out_is_never_overwritten(no_engine, tiny_model, tmp_path):
    out = tmp_path / "out"
    shard = write_parquet(jsonl_to_table(DEMO), out / "x.parquet")
    before = shard.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = engine_cli("--input", str(shard), "--out", str(out), "--model", str(tiny_model), *extra)
        assert r.exit_code == EXIT_REFUSED
        assert f"the output of {shard} would be written over that input file" in one_line(r)
    assert shard.read_bytes() == before


# ---- state a failed start leaves ----------------------------------------------------------------------


class _StartFails:
    def __init__(self, *a, **k):
        raise RuntimeError("engine start failed (injected)")


def test_failed_start_leaves_no_manifest_and_the_corrected_rerun_is_not_refused(monkeypatch, tiny_model, shards, tmp_path):
    monkeypatch.setattr(engines, "Engine", _StartFails)
    out = tmp_path / "out"
    cfg = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024, seed=1)
    with pytest.raises(RuntimeError, match="injected"):
        runner.run(cfg, shards, out, progress=False)
    assert not (out / MANIFEST_NAME).exists()
    # The corrected rerun (another seed) gets as far as starting the engine again, not "another configuration".
    with pytest.raises(RuntimeError, match="injected"):
        runner.run(cfg.override(seed=2), shards, out, progress=False)
    # A manifest left by an older version of such a run (an identity, no finished shard) no longer blocks it.
    RunManifest(identity={"seed": "abc"}).write(out)
    with pytest.raises(RuntimeError, match="injected"):
        runner.run(cfg.override(seed=3), shards, out, progress=False)


# ---- nightly.sh names each exit code ------------------------------------------------------------------


def test_nightly_reports_refused_and_data_error_for_what_they_are(tiny_model, tiny_adapter, tmp_path):
    wrapper = tmp_path / "engine"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m reportminer.engine.cli "$@"\n')
    wrapper.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "ENGINE": str(wrapper), "OUT": str(tmp_path / "out"),
           "EXTRA_ARGS": f"--model {tiny_model}", "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(["bash", str(REPO / "scripts" / "nightly.sh")], env={**env, "INPUT": str(empty)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == EXIT_DATA and "DATA ERROR" in r.stdout, (r.stdout, r.stderr)
    ad = _copy_adapter(tiny_adapter, tmp_path / "noweights")
    (ad / "adapter_model.safetensors").unlink()
    write_shards(jsonl_to_table(DEMO), tmp_path / "in", rows_per_shard=6)
    r = subprocess.run(["bash", str(REPO / "scripts" / "nightly.sh")],
                       env={**env, "INPUT": str(tmp_path / "in"), "ADAPTERS": f"v={ad}"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == EXIT_REFUSED and "REFUSED" in r.stdout and "no weights" in r.stderr, (r.stdout, r.stderr)


# ---- with the real engine: one engine, one first run shared ---------------------------------------------

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def cfg(tiny_model) -> EngineConfig:
    return EngineConfig(model=str(tiny_model), max_model_len=1024, kv_cache_memory_bytes="256MiB", max_num_seqs=32,
                        max_tokens=MAX_TOKENS, enforce_eager=True)


@pytest.fixture(scope="module")
def eng(cfg):
    from reportminer.engine import Engine

    e = Engine.start(cfg)
    yield e
    e.close()


@pytest.fixture(scope="module")
def first_run(eng, cfg, tmp_path_factory):
    """in/: top.parquet (a null and a duplicate id), linked -> a folder outside with 2 shards, loop -> in.

    One run into out/; tests copy in/ and out/ before changing them.
    """
    base = tmp_path_factory.mktemp("first")
    table = jsonl_to_table(DEMO)
    elsewhere = base / "elsewhere"
    write_shards(table.slice(0, 8), elsewhere, rows_per_shard=4)
    d = base / "in"
    top = table.slice(8, 4).to_pylist()
    top[1]["id"] = None
    top[2]["id"] = top[3]["id"]
    write_parquet(pa.Table.from_pylist(top, schema=table.schema), d / "top.parquet")
    (d / "linked").symlink_to(elsewhere, target_is_directory=True)
    (d / "loop").symlink_to(d, target_is_directory=True)
    s = runner.run(cfg, d, base / "out", engine=eng, progress=False)
    return base, s


def _copy_run(first_run, tmp_path) -> tuple[Path, Path]:
    base, _ = first_run
    shutil.copytree(base / "elsewhere", tmp_path / "elsewhere")
    shutil.copytree(base / "in", tmp_path / "in", symlinks=True, ignore=shutil.ignore_patterns("linked", "loop"))
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    shutil.copytree(base / "out", tmp_path / "out")
    return tmp_path / "in", tmp_path / "out"


@pytest.mark.engine
def test_symlinked_folder_rows_are_run_and_the_loop_reported_once(first_run):
    base, s = first_run
    rows = read_table(base / "out").to_pylist()
    assert s.shards_done == 3 and s.rows == 12 and len(rows) == 12
    assert sorted(p.relative_to(base / "out").as_posix() for p in (base / "out").rglob("*.parquet")) == [
        "linked/shard-00000.parquet", "linked/shard-00001.parquet", "top.parquet"]
    assert len([w for w in s.warnings if "symlink loop" in w]) == 1


@pytest.mark.engine
def test_null_and_duplicate_ids_are_reported_in_the_summary(first_run):
    base, s = first_run
    assert (s.ids["null"], s.ids["duplicate"], s.ids["duplicate_rows"], s.ids["rows"]) == (1, 1, 2, 12)
    assert s.ids["null_examples"] == ["top.parquet row 2"]
    assert "ids: 1 null, 1 not unique (2 rows)" in s.render()
    summary = json.loads((base / "out" / "_engine_summary.json").read_text())
    assert summary["ids"]["duplicate"] == 1


@pytest.mark.engine
def test_same_size_edit_with_mtime_restored_is_rerun(eng, cfg, first_run, tmp_path):
    d, out = _copy_run(first_run, tmp_path)
    f = d / "linked" / "shard-00000.parquet"
    # Rewrite uncompressed, then swap two characters for two of the same UTF-8 length: same size, new content.
    t = pq.read_table(f)
    pq.write_table(t, f, compression=None)
    first = runner.run(cfg, d, out, engine=eng, progress=False)  # the re-encoded file is new content
    assert first.shards_done == 1
    st = f.stat()
    raw = f.read_bytes()
    old, new = "公司".encode(), "企业".encode()
    assert old in raw
    f.write_bytes(raw.replace(old, new))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    s = runner.run(cfg, d, out, engine=eng, progress=False)
    assert (s.shards_done, s.shards_skipped) == (1, 2)
    paragraphs = pq.read_table(out / "linked" / "shard-00000.parquet").column("paragraph").to_pylist()
    assert any("企业" in p for p in paragraphs) and not any("公司" in p for p in paragraphs)


@pytest.mark.engine
def test_outputs_of_vanished_inputs_are_reported_then_pruned_on_request(eng, cfg, first_run, tmp_path):
    d, out = _copy_run(first_run, tmp_path)
    (d / "top.parquet").unlink()
    s = runner.run(cfg, d, out, engine=eng, progress=False)
    assert s.inputs_vanished == ["top.parquet"] and s.pruned == [] and (out / "top.parquet").exists()
    assert "1 output(s) of vanished input shards (kept and counted below; --prune deletes them): top.parquet" in s.render()
    assert s.out_totals["rows"] == 12
    kept = {p: p.read_bytes() for p in (out / "linked").glob("*.parquet")}
    s = runner.run(cfg, d, out, engine=eng, progress=False, prune=True)
    assert s.pruned == ["top.parquet"] and not (out / "top.parquet").exists()
    assert s.out_totals["rows"] == 8 and "top.parquet" not in json.loads((out / MANIFEST_NAME).read_text())["shards"]
    assert {p: p.read_bytes() for p in (out / "linked").glob("*.parquet")} == kept  # good rows intact


@pytest.mark.engine
def test_overwrite_skips_manifest_paths_outside_out(eng, cfg, first_run, tmp_path):
    d, out = _copy_run(first_run, tmp_path)
    victim, victim2 = tmp_path / "victim.txt", tmp_path / "abs-victim.txt"
    victim.write_text("keep")
    victim2.write_text("keep")
    m = json.loads((out / MANIFEST_NAME).read_text())
    m["shards"]["evil"] = {**m["shards"]["top.parquet"], "output": "../victim.txt"}
    m["shards"]["evil2"] = {**m["shards"]["top.parquet"], "output": str(victim2)}
    (out / MANIFEST_NAME).write_text(json.dumps(m))
    inputs = _snapshot(tmp_path / "elsewhere")
    s = runner.run(cfg, d, out, engine=eng, progress=False, overwrite=True)
    assert victim.read_text() == "keep" and victim2.read_text() == "keep"
    assert sum("resolves outside --out" in w for w in s.warnings) == 2
    assert s.shards_done == 3 and len(read_table(out).to_pylist()) == 12
    assert _snapshot(tmp_path / "elsewhere") == inputs


@pytest.mark.engine
def test_seed_format_jsonl_is_read_directly(eng, cfg, tmp_path):
    d = tmp_path / "jsonl"
    d.mkdir()
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    (d / "a.jsonl").write_text("\n".join(lines[:7]) + "\n", encoding="utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "b.jsonl").write_text("\n".join(lines[7:]) + "\n", encoding="utf-8")
    s = runner.run(cfg, d, tmp_path / "out", engine=eng, progress=False)
    assert s.shards_done == 2 and s.rows == len(lines)
    a = pq.read_table(tmp_path / "out" / "a.parquet").to_pylist()
    expected = jsonl_to_table(d / "a.jsonl").to_pylist()
    assert [r["id"] for r in a] == [r["id"] for r in expected]
    assert [r["paragraph"] for r in a] == [r["paragraph"] for r in expected]
    assert [r["gold_metrics"] for r in a] == [r["gold_metrics"] for r in expected]  # gold rides along
    assert pq.read_table(tmp_path / "out" / "sub" / "b.parquet").num_rows == len(lines) - 7
    again = runner.run(cfg, d, tmp_path / "out", engine=eng, progress=False)
    assert (again.shards_done, again.shards_skipped) == (0, 2)


@pytest.mark.engine
def test_disk_full_while_writing_is_one_line_exit_4_and_no_temp_file(eng, cfg, first_run, tmp_path):
    d, _ = _copy_run(first_run, tmp_path)
    out = tmp_path / "small"
    _mount_tmpfs(out, "size=8k")
    try:
        with pytest.raises(RunFailed) as ei:
            runner.run(cfg, d, out, engine=eng, progress=False)
        e = ei.value
        assert e.exit_code == EXIT_FAILED
        line = error_line("engine", e)
        assert "\n" not in line and "No space left on device (ENOSPC)" in line and f"{out}/" in line
        assert not [p for p in out.rglob(".*.tmp")], list(out.rglob("*"))
        assert _open_files_under(out) == []  # nothing of --out left open by the failed run
    finally:
        _umount(out)


def test_other_configuration_still_refused_when_results_exist(no_engine, tiny_model, shards, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_parquet(pa.table({"x": [1]}), out / "done.parquet")
    RunManifest(identity={"seed": "abc"}, shards={"done.parquet": {"output": "done.parquet", "input": {}}}).write(out)
    with pytest.raises(ConfigMismatch, match="another configuration"):
        runner.run(EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024), shards, out, progress=False)
