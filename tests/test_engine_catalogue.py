"""Issue 19's fault catalogue, engine side: each case's message, exit code, and that nothing outside --out
(and no good row inside it) changed.

Like tests/test_engine_hardening.py (issue 9's catalogue, whose helpers these reuse), cases decided before
vLLM starts run through the real `engine run` CLI with a tripwire where the engine class is; the one case
that needs rows read by a running engine (invalid UTF-8 inside a shard) runs the real vLLM CPU engine on
the tiny model and carries the `engine` marker.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from reportminer.data.errors import EXIT_DATA, EXIT_REFUSED, ConfigError, DataError
from reportminer.data.io import jsonl_to_table, write_parquet, write_shards
from reportminer.engine import engines, runner
from reportminer.engine.config import EngineConfig
from reportminer.engine.preflight import check_engine_limits, safe_remove
from reportminer.engine.run_manifest import HISTORY_NAME, LOCK_NAME, MANIFEST_NAME, SUMMARY_NAME, OutLock, RunManifest
from reportminer.engine.shards import InputShard, ShardReader, find_shards

from test_engine_hardening import DEMO, _snapshot, engine_cli, one_line


@pytest.fixture
def shards(tmp_path) -> Path:
    d = tmp_path / "in"
    write_shards(jsonl_to_table(DEMO), d, rows_per_shard=6)
    return d


def _run(shards: Path, out: Path, model: Path, *extra: str):
    return engine_cli("--input", str(shards), "--out", str(out), "--model", str(model), *extra)


# ---- bookkeeping names in --out: never written through a link, a folder refused (exit 2) -------------------


@pytest.mark.parametrize("name", [LOCK_NAME, HISTORY_NAME, MANIFEST_NAME, SUMMARY_NAME])
def test_a_symlink_at_a_bookkeeping_name_is_refused_and_its_target_untouched(no_engine, tiny_model, shards, tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    inputs = _snapshot(shards)
    r = _run(shards, out, tiny_model)
    assert r.exit_code == EXIT_REFUSED
    line = one_line(r)
    assert f"{out / name}: is a symlink (to {victim})" in line and "remove the link" in line
    assert victim.read_text() == "keep me\n"
    assert _snapshot(shards) == inputs
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written beside it


@pytest.mark.parametrize("name", [LOCK_NAME, HISTORY_NAME])
def test_a_folder_at_a_bookkeeping_name_is_refused_in_one_line(no_engine, tiny_model, shards, tmp_path, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "keep.txt").write_text("x")
    r = _run(shards, out, tiny_model)
    assert r.exit_code == EXIT_REFUSED
    assert f"{out / name}: is a folder; the engine keeps a file of that name in --out" in one_line(r)
    assert (out / name / "keep.txt").read_text() == "x"


def test_the_history_append_itself_refuses_a_link(tmp_path):
    """The race the up-front check cannot close: a link planted during the run is still not written through."""
    from reportminer.engine.storage import append_line

    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    (tmp_path / HISTORY_NAME).symlink_to(victim)
    with pytest.raises(ConfigError, match="is a symlink"):
        append_line(tmp_path / HISTORY_NAME, "{}")
    assert victim.read_text() == "keep\n"


# ---- the lock names its holder -----------------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from reportminer.engine.run_manifest import OutLock
with OutLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _wait_line(proc: subprocess.Popen, want: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert want in line, line + (proc.stderr.read() if proc.stderr else "")


def test_lock_message_names_the_holder_pid_host_and_start(no_engine, tiny_model, shards, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        _wait_line(proc, "held")
        r = _run(shards, out, tiny_model)
        assert r.exit_code == EXIT_REFUSED
        line = one_line(r)
        assert f"another engine run is writing here (pid {proc.pid} on host {socket.gethostname()}, started 20" in line
        assert "has exited" not in line
    finally:
        proc.kill()
        proc.wait()


_INHERITED = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(60)
"""


def test_lock_held_by_a_process_other_than_the_recorded_pid_names_the_real_holder(tmp_path):
    """The recorded pid is gone (a killed run) but a process it started still holds the file: that one is named."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(),
                                             "started_at": "2026-01-01T00:00:00+00:00"}))
    proc = subprocess.Popen([sys.executable, "-c", _INHERITED, str(out / LOCK_NAME)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_line(proc, "held")
        with pytest.raises(Exception) as ei:
            with OutLock(out):
                pass
        msg = str(ei.value)
        assert ei.value.exit_code == EXIT_REFUSED  # type: ignore[attr-defined]
        assert f"pid {dead_pid} on host {socket.gethostname()}, started 2026-01-01T00:00:00+00:00" in msg
        assert f"that process has exited, the lock is held by {proc.pid} (python" in msg
    finally:
        proc.kill()
        proc.wait()
    with OutLock(out):  # free again; the file now names this process
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


# ---- adapters, manifests naming folders ---------------------------------------------------------------------


@pytest.mark.parametrize("body,said", [("[1, 2]", "expected a JSON object, got list"),
                                       ('{"base_model": [1]}', "base_model is list"),
                                       ('{"schema_version": 3}', "no base_model")])
def test_adapter_manifest_of_the_wrong_shape_is_one_line(no_engine, tiny_model, tiny_adapter, shards, tmp_path, body, said):
    import shutil

    ad = tmp_path / "ad"
    shutil.copytree(tiny_adapter, ad)
    (ad / "reportminer_adapter.json").write_text(body)
    r = _run(shards, tmp_path / "out", tiny_model, "--adapter", f"v={ad}")
    assert r.exit_code == EXIT_REFUSED
    line = one_line(r)
    assert f"adapter v={ad}: {ad / 'reportminer_adapter.json'}: not an adapter manifest: {said}" in line or \
        (said == "no base_model" and "no base_model" in line), line
    assert not (tmp_path / "out").exists()


def test_a_manifest_entry_naming_a_folder_is_not_deleted_with_overwrite(monkeypatch, tiny_model, shards, tmp_path):
    class _Started(Exception):
        pass

    class _StopAtStart:
        def __init__(self, *a, **k):
            raise _Started()

    monkeypatch.setattr(engines, "Engine", _StopAtStart)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "keep.parquet").write_bytes(b"x")
    write_parquet(pa.table({"x": [1]}), out / "done.parquet")
    RunManifest(identity={"seed": "old"}, shards={
        "done.parquet": {"output": "done.parquet", "input": {}},
        "weird": {"output": "sub", "input": {}}}).write(out)
    cfg = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024)
    with pytest.raises(_Started):  # got past --overwrite's deletions to the engine start: no traceback before
        runner.run(cfg, shards, out, overwrite=True, progress=False)
    assert (out / "sub" / "keep.parquet").read_bytes() == b"x" and not (out / "done.parquet").exists()
    assert safe_remove(out, "sub", set()) == "not deleting 'sub' named in the run manifest: it is a folder, not an output shard"


# ---- input discovery ----------------------------------------------------------------------------------------


def test_input_and_out_the_same_folder_is_named_as_such(no_engine, tiny_model, shards):
    r = _run(shards, shards, tiny_model)
    assert r.exit_code == EXIT_REFUSED
    line = one_line(r)
    assert f"--input {shards} and --out are the same folder" in line and "mounted" not in line


def test_dangling_shard_link_is_named_and_upper_case_suffix_is_read(tmp_path, shards):
    (shards / "gone.parquet").symlink_to(tmp_path / "nowhere.parquet")
    os.rename(shards / "shard-00001.parquet", shards / "B.PARQUET")
    found, notes = find_shards(shards)
    assert [s.rel for s in found] == ["B.PARQUET", "shard-00000.parquet"]
    assert [s.out_rel for s in found] == ["B.parquet", "shard-00000.parquet"]
    assert notes == [f"{shards / 'gone.parquet'}: dangling symlink (to {tmp_path / 'nowhere.parquet'}); its shard is "
                     "missing from this run"]
    os.symlink(shards / "B.PARQUET", shards / "B.parquet")  # two inputs, one output name
    with pytest.raises(DataError, match="B.PARQUET and B.parquet would both be written to B.parquet"):
        find_shards(shards)


def test_dangling_input_link_is_named(tmp_path):
    link = tmp_path / "shards"
    link.symlink_to(tmp_path / "unmounted")
    with pytest.raises(DataError, match=f"{link}: a dangling symlink \\(to {tmp_path / 'unmounted'}\\); is the volume"):
        find_shards(link)


# ---- invalid UTF-8 inside a Parquet string column ---------------------------------------------------------


def _bad_utf8_shard(path: Path, bad_row: int = 4, column: str = "paragraph") -> Path:
    t = jsonl_to_table(DEMO).slice(0, 6)
    i = t.schema.get_field_index(column)
    raw = [v.encode() for v in t.column(column).to_pylist()]
    raw[bad_row] = b"\xff\xfe " + raw[bad_row]
    arr = pa.array(raw, pa.binary()).view(pa.string())  # pyarrow does not check UTF-8 here, as Parquet readers don't
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t.set_column(i, column, arr), path)
    return path


def test_invalid_utf8_is_named_by_column_and_row(tmp_path):
    f = _bad_utf8_shard(tmp_path / "bad.parquet", bad_row=4)
    reader = ShardReader(InputShard(f, "bad.parquet"), batch_rows=2)
    got = []
    with pytest.raises(DataError) as ei:
        for rb in reader.batches():
            got.append(rb.num_rows)
    assert got == [2, 2]  # the batches before the bad row were fine
    assert str(ei.value).startswith(f"{f}[row 5, id='demo-05']: column paragraph: not UTF-8 text (byte b'\\xff' at byte 0)")


def test_invalid_utf8_in_the_id_column_fails_only_its_shard_before_the_engine(no_engine, tiny_model, tmp_path):
    d = tmp_path / "in"
    _bad_utf8_shard(d / "a.parquet", bad_row=2, column="id")
    r = _run(d, tmp_path / "out", tiny_model)
    assert r.exit_code == EXIT_DATA
    assert f"{d / 'a.parquet'}[row 3]: column id: not UTF-8 text" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.engine
def test_invalid_utf8_paragraph_fails_its_shard_and_the_good_one_is_written(tiny_model, tmp_path):
    d = tmp_path / "in"
    write_parquet(jsonl_to_table(DEMO).slice(6, 6), d / "good.parquet")
    _bad_utf8_shard(d / "bad.parquet", bad_row=4)
    cfg = EngineConfig(model=str(tiny_model), max_model_len=1024, kv_cache_memory_bytes="256MiB", max_num_seqs=8,
                       max_tokens=8, enforce_eager=True)
    s = runner.run(cfg, d, tmp_path / "out", progress=False)
    assert s.exit_code == EXIT_DATA and s.shards_done == 1
    assert [f["shard"] for f in s.shards_failed] == ["bad.parquet"]
    assert s.shards_failed[0]["error"].startswith(f"{d / 'bad.parquet'}[row 5, id='demo-05']: column paragraph: not UTF-8")
    assert pq.read_table(tmp_path / "out" / "good.parquet").num_rows == 6
    assert not (tmp_path / "out" / "bad.parquet").exists()


# ---- settings vLLM would refuse after starting --------------------------------------------------------------


@pytest.mark.parametrize("key,value,said", [
    ("temperature", "nan", "temperature: must be a finite number, got nan"),
    ("temperature", "inf", "temperature: must be a finite number, got inf"),
    ("temperature", "1e999", "temperature: must be a finite number, got inf"),
    ("seed", "-1", "seed: must be in 0 .. 4294967295"),
    ("kv_cache_memory_bytes", "1", "kv_cache_memory_bytes: 1 bytes cannot hold one sequence of max_model_len 1024"),
    ("max_num_batched_tokens", "16", "max_num_batched_tokens (16) must be >= max_num_seqs (128)"),
])
def test_settings_vllm_refuses_late_are_refused_first(tiny_model, key, value, said):
    base = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024, device="cpu")
    if value == "nan":  # `--set` refuses the text nan itself; YAML's .nan and the Python API pass it
        cfg = EngineConfig.from_dict({**{k: getattr(base, k) for k in ("model", "max_tokens", "max_model_len", "device")},
                                      key: float("nan")})
    else:
        cfg = base.with_sets([f"{key}={value}"])
    with pytest.raises(ConfigError, match=None) as ei:
        check_engine_limits(cfg.resolve())
    assert said in str(ei.value) and "\n" not in str(ei.value)


# ---- what readers of the whole --out folder see -------------------------------------------------------------


def test_results_folder_reads_with_pyarrow_and_a_polars_glob_despite_bookkeeping(tmp_path):
    out = tmp_path / "out"
    write_parquet(pa.table({"id": ["a", "b"]}), out / "x.parquet")
    write_parquet(pa.table({"id": ["c"]}), out / "sub" / "y.parquet")
    for name in (LOCK_NAME, MANIFEST_NAME, SUMMARY_NAME, HISTORY_NAME, "_rowcache/seg-1.arrow", ".x.parquet.ab12.tmp"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}")
    assert pq.read_table(out).num_rows == 3
    assert ds.dataset(out).to_table().num_rows == 3
    pl = pytest.importorskip("polars")
    assert pl.read_parquet(f"{out}/**/*.parquet").height == 3  # what docs/engine.md tells polars users
    with pytest.raises(Exception, match="different file extensions"):  # polars 2.1 skips no name: documented
        pl.read_parquet(out)


def test_lock_file_is_not_truncated_by_a_waiting_run(tmp_path):
    """A refused run must not clear the holder's record (it opened without O_TRUNC)."""
    out = tmp_path / "out"
    out.mkdir()
    with OutLock(out):
        before = (out / LOCK_NAME).read_text()
        with pytest.raises(Exception, match="another engine run is writing here"):
            with OutLock(out):
                pass
        assert (out / LOCK_NAME).read_text() == before
        assert json.loads(before)["pid"] == os.getpid()


# ---- evidence grounding on every output metric (issue 19 item 4) ------------------------------------------


def test_every_output_metric_carries_its_spans_and_grounded_flag():
    from reportminer.data.schema import GROUNDED, SPANS, arrow_result_metrics_type
    from reportminer.engine.rows import OK, RowResult, output_schema, output_table

    para = "2025年前三季度，公司实现营业收入120.5亿元，同比增长23.4%；毛利率提升至35.2%。"
    batch = pa.RecordBatch.from_pylist([{"id": "a", "chapter_title": "t", "paragraph": para}])
    m = [{"metric_name": "营业收入", "metric_type": "financial", "score": 0.9, "reason": "同比增长23.4%", "agreement": 1.0},
         {"metric_name": "客户满意度", "metric_type": "business", "score": 0.5, "reason": "无", "agreement": 1.0}]
    schema, _ = output_schema(batch.schema)
    results = [RowResult(adapter="v", status=OK, analysis="x", metrics=m, dropped_metrics=[m[1]]),
               RowResult(adapter="w", status="error", reason="length", detail="cut")]
    t = output_table(batch, results, 2, schema)
    assert t.schema.field("metrics").type == arrow_result_metrics_type()
    got = t.column("metrics").to_pylist()
    (s0, e0), = [tuple(x) for x in got[0][0][SPANS] if para[x[0]:x[1]] == "营业收入"]
    assert para[s0:e0] == "营业收入" and got[0][0][GROUNDED] is True
    assert got[0][1][SPANS] == [] and got[0][1][GROUNDED] is False
    assert t.column("dropped_metrics").to_pylist()[0][0][GROUNDED] is False
    assert got[1] is None  # an error row has no metrics to ground
    assert m[0].get(SPANS) is None  # the row's own dicts are not changed (the row cache keeps them as answered)


def test_result_format_is_in_the_run_identity_but_not_in_the_row_cache_scope(tiny_model):
    from reportminer.engine.row_cache import column_scopes
    from reportminer.engine.run_manifest import RESULT_FORMAT, run_identity

    cfg = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024, device="cpu").resolve()
    ident = run_identity(cfg, [])
    assert ident["result_format"] == RESULT_FORMAT == 2
    older = {k: v for k, v in ident.items() if k != "result_format"}
    assert column_scopes(ident, ["base"], {}) == column_scopes(older, ["base"], {})


def test_an_out_of_the_older_result_format_is_refused_naming_it(no_engine, tiny_model, shards, tmp_path):
    from reportminer.engine.run_manifest import run_identity

    cfg = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024, device="cpu")
    out = tmp_path / "out"
    write_parquet(pa.table({"x": [1]}), out / "shard-00000.parquet")
    older = {k: v for k, v in run_identity(cfg.resolve(), []).items() if k != "result_format"}
    RunManifest(identity=older, shards={"shard-00000.parquet": {"output": "shard-00000.parquet", "input": {}}}).write(out)
    r = _run(shards, out, tiny_model, "--device", "cpu")
    assert r.exit_code == EXIT_REFUSED
    assert "holds results of another configuration" in one_line(r) and "result_format: None -> 2" in one_line(r)


# ---- results independent of where a run was resumed (issue 19 item 2) -------------------------------------


def test_eager_is_decided_once_per_out_and_kept_on_resume(tiny_model, tmp_path):
    from reportminer.engine.run_manifest import run_identity, settle_eager

    auto = EngineConfig(model=str(tiny_model), max_tokens=8, max_model_len=1024, device="cpu").resolve()
    assert auto.enforce_eager is None
    out = tmp_path / "out"
    assert settle_eager(auto, out, output_rows=100).enforce_eager is True  # a new small --out: eager
    big = settle_eager(auto, out, output_rows=10_000)
    assert big.enforce_eager is False  # a new large one: compiled
    RunManifest(identity=run_identity(big, [])).write(out)
    # Resumed with 12 rows left (below the 256 that made the old rule switch): still compiled, as the first run.
    again = settle_eager(auto, out, output_rows=12)
    assert again.enforce_eager is False and run_identity(again, []) == run_identity(big, [])
    explicit = auto.override(enforce_eager=True)
    assert settle_eager(explicit, out, output_rows=12).enforce_eager is True  # the identity check then refuses it
    assert run_identity(explicit, [])["enforce_eager"] is True


@pytest.mark.parametrize("setting,said", [
    ("temperature=1e999", "temperature: must be a finite number, got inf"),
    ("seed=-1", "seed: must be in 0 .. 4294967295"),
    ("kv_cache_memory_bytes=1", "kv_cache_memory_bytes: 1 bytes cannot hold one sequence"),
    ("max_num_batched_tokens=16", "max_num_batched_tokens (16) must be >= max_num_seqs"),
])
def test_late_vllm_settings_are_one_line_before_the_engine(no_engine, tiny_model, shards, tmp_path, setting, said):
    r = _run(shards, tmp_path / "out", tiny_model, "--device", "cpu", "--set", setting)
    assert r.exit_code == EXIT_REFUSED
    assert said in one_line(r)
    assert not (tmp_path / "out").exists()
