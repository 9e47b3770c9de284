"""Issue 19's catalogue, data side: bad input and interrupts that `datakit` met with a traceback, a wrong exit
code or a half-written folder. One test per case; each asserts the message, the exit code, and that nothing
outside --out (and nothing inside an older --out) was touched.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reportminer.data import io as dio
from reportminer.data.cli import main as datakit
from reportminer.data.errors import EXIT_DATA, EXIT_INTERRUPTED, DataError
from reportminer.data.io import invalid_utf8, read_table, require_utf8, write_shard_set
from reportminer.data.schema import arrow_metrics_type


def run(*args, code: int = 0):
    res = CliRunner().invoke(datakit, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (hidden ones too), to prove what changed."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------ text that is not UTF-8 inside Parquet


def _not_utf8(values: list[bytes | None]) -> pa.Array:
    """A string column holding raw bytes, as a writer that views bytes as strings leaves it."""
    return pa.array(values, pa.binary()).view(pa.string())


@pytest.fixture()
def bad_text_shard(tmp_path: Path) -> Path:
    """Two shards: a good one and one whose row 2 (id 'b') has GBK bytes in `paragraph`."""
    folder = tmp_path / "shards"
    folder.mkdir()
    good = pa.table({"id": ["x"], "chapter_title": ["t"], "paragraph": ["营业收入同比增长12%。"]})
    pq.write_table(good, folder / "shard-00000.parquet")
    bad = pa.table({
        "id": ["a", "b", "c"], "chapter_title": ["t", "t", "t"],
        "paragraph": _not_utf8([b"ok", "收入".encode("gbk"), b"fine"]),
    })
    pq.write_table(bad, folder / "shard-00001.parquet")
    return folder


WANT = "shard-00001.parquet[row 2, id='b']: column paragraph: not UTF-8 text (byte b'\\xca' at byte 0)"


@pytest.mark.parametrize("cmd", ["validate", "stats", "export"])
def test_text_that_is_not_utf8_is_a_data_error_naming_file_row_and_column(cmd, bad_text_shard: Path, tmp_path: Path):
    before = tree(tmp_path)
    args = {"validate": [bad_text_shard], "stats": [bad_text_shard],
            "export": ["--input", bad_text_shard, "--out", tmp_path / "out.jsonl"]}[cmd]
    res = run(cmd, *args, code=EXIT_DATA)
    line = res.stderr.strip()
    assert line.startswith("datakit: data error: DataError: ") and "Traceback" not in res.output, res.output
    assert "\n" not in line and "column paragraph: not UTF-8 text (byte b'\\xca' at byte 0)" in line
    assert "shard-00001.parquet[row 2" in line
    if cmd != "stats":  # stats reads only the columns it describes, so it names the row without the id
        assert WANT in line
    assert tree(tmp_path) == before  # export wrote nothing, not even a temporary file


def test_require_utf8_names_nested_columns_and_batch_offsets():
    """The helper the engine reuses on record batches: a bad metric name inside gold_metrics, row offset."""
    names = _not_utf8([b"a", b"\xc3\x28"])  # an invalid two-byte sequence
    flat = pa.StructArray.from_arrays(
        [names, pa.array(["financial", "business"]), pa.array([0.9, 0.9]), pa.array(["r", "r"])],
        names=["metric_name", "metric_type", "score", "reason"],
    )
    metrics = pa.ListArray.from_arrays(pa.array([0, 1, 1, 2], pa.int32()), flat).cast(arrow_metrics_type())
    batch = pa.RecordBatch.from_arrays([pa.array(["r1", "r2", "r3"]), metrics], names=["id", "gold_metrics"])
    bad = invalid_utf8(batch)
    assert bad is not None and (bad.column, bad.row, bad.byte, bad.offset) == ("gold_metrics", 2, b"\xc3", 0)
    with pytest.raises(DataError, match=r"^s\.parquet\[row 1003, id='r3'\]: column gold_metrics: not UTF-8 text"):
        require_utf8(batch, "s.parquet", first_row=1000)
    assert invalid_utf8(pa.table({"id": ["一", "二"], "n": [1, 2]})) is None
    require_utf8(pa.table({"id": ["一"]}), "fine.parquet")  # no error


def test_the_first_bad_row_is_found_past_the_first_block():
    vals = [b"ok"] * 9000 + [b"\xff"]
    assert invalid_utf8(pa.table({"paragraph": _not_utf8(vals)})).row == 9000  # type: ignore[union-attr]


def test_read_table_is_checked_too(bad_text_shard: Path):
    with pytest.raises(DataError, match=r"shard-00001\.parquet\[row 2, id='b'\]"):
        read_table(bad_text_shard)


# ------------------------------------------------------------------ datakit shard: all or nothing


def _jsonl(path: Path, rows: int, tag: str) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"{tag}-{i}", "type": "A", "input": {
                "chapter_title": "盈利能力", "paragraph": f"{tag} 第{i}段：营业收入同比增长{i % 97}%。"}}, ensure_ascii=False) + "\n")
    return path


def test_interrupt_while_writing_leaves_an_older_set_as_it_was(tmp_path: Path, monkeypatch):
    """Ctrl-C after 16 of 21 shards: exit 130, the older 21-shard set byte for byte, nothing left beside it."""
    out = tmp_path / "shards"
    run("shard", "--input", _jsonl(tmp_path / "old.jsonl", 210, "old"), "--out", out, "--rows-per-shard", "10")
    (out / "README.txt").write_text("mine", encoding="utf-8")
    before = tree(tmp_path)
    new = _jsonl(tmp_path / "new.jsonl", 210, "new")
    before[new.name] = tree(tmp_path)[new.name]
    real, calls = dio.write_parquet, []

    def interrupted_after_16(table, path):
        calls.append(path)
        if len(calls) == 17:
            raise KeyboardInterrupt  # what Ctrl-C raises between two shard writes
        return real(table, path)

    monkeypatch.setattr(dio, "write_parquet", interrupted_after_16)
    res = run("shard", "--input", new, "--out", out, "--rows-per-shard", "10", code=EXIT_INTERRUPTED)
    assert res.stderr.strip() == f"datakit: interrupted; {out} is as it was (the new shards were written beside it and removed)"
    assert all(p.parent != out for p in calls)  # nothing was written into --out itself
    assert tree(tmp_path) == before


def test_a_finished_swap_replaces_the_set_and_keeps_other_files(tmp_path: Path):
    out = tmp_path / "shards"
    run("shard", "--input", _jsonl(tmp_path / "a.jsonl", 50, "a"), "--out", out, "--rows-per-shard", "10")
    (out / "notes").mkdir()
    (out / "notes" / "n.txt").write_text("kept", encoding="utf-8")
    res = run("shard", "--input", _jsonl(tmp_path / "b.jsonl", 25, "b"), "--out", out, "--rows-per-shard", "10")
    assert "wrote 25 rows to 3 shard(s)" in res.stdout and "(removed 2 stale shard(s))" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["notes", "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert (out / "notes" / "n.txt").read_text(encoding="utf-8") == "kept"
    assert read_table(out).column("id").to_pylist() == [f"b-{i}" for i in range(25)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "shards"]  # no temporary folder left


def test_the_swap_without_an_atomic_exchange(tmp_path: Path, monkeypatch):
    """Systems without renameat2: two renames, same result."""
    monkeypatch.setattr(dio, "_exchange", lambda a, b: False)
    out = tmp_path / "s"
    t1 = pa.table({"id": [str(i) for i in range(30)]})
    write_shard_set(t1, out, 10)
    res = write_shard_set(pa.table({"id": ["z"]}), out, 10)
    assert [p.name for p in res.paths] == ["shard-00000.parquet"] and res.removed == ["shard-00001.parquet", "shard-00002.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"] and read_table(out).column("id").to_pylist() == ["z"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_during_shard_exits_130_and_leaves_no_partial_folder(sig, tmp_path: Path):
    """The real process and signal: a fresh --out never appears half-written (it appears whole or not at all)."""
    src = _jsonl(tmp_path / "big.jsonl", 6000, "s")
    out = tmp_path / "shards"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reportminer.data.cli", "shard", "--input", str(src), "--out", str(out),
         "--rows-per-shard", "5", "--no-validate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        if partial and len(list(partial[0].glob("*.parquet"))) >= 20:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "shard finished before it could be interrupted; raise the row count"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1].startswith("datakit: interrupted;") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]  # no --out, no temporary folder


# ------------------------------------------------------------------ duplicate YAML keys, UTF-16 input


def test_a_duplicate_yaml_key_is_refused_with_the_key_and_both_lines(tmp_path: Path):
    from reportminer.data.config import read_yaml_mapping
    from reportminer.data.errors import EXIT_REFUSED, ConfigError
    from reportminer.trainer.cli import main as trainer

    recipe = tmp_path / "mine.yaml"
    recipe.write_text("learning_rate: 2.0e-4\nepochs: 2\nlearning_rate: 1.0e-3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        read_yaml_mapping(recipe)
    assert str(e.value) == (f"{recipe}:3: key 'learning_rate' is given twice (first on line 1); "
                            "YAML would keep the last one silently: delete one")
    res = CliRunner().invoke(trainer, ["config", "-c", str(recipe)])
    assert res.exit_code == EXIT_REFUSED and "key 'learning_rate' is given twice" in res.stderr, res.output
    nested = tmp_path / "nested.yaml"
    nested.write_text("stop:\n  a: 1\n  a: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nested\.yaml:3: key 'a' is given twice \(first on line 2\)"):
        read_yaml_mapping(nested)
    merged = tmp_path / "merge.yaml"  # a merge key may be overridden: that is what it is for
    merged.write_text("base: &b\n  a: 1\nx:\n  <<: *b\n  a: 2\n", encoding="utf-8")
    assert read_yaml_mapping(merged) == {"base": {"a": 1}, "x": {"a": 2}}


def test_a_yaml_file_saved_as_utf16_is_read(tmp_path: Path):
    import codecs

    from reportminer.data.config import read_yaml_mapping

    p = tmp_path / "u16.yaml"
    p.write_bytes(codecs.BOM_UTF16_LE + "description: 中文说明\ntemperature: 0.5\n".encode("utf-16-le"))
    assert read_yaml_mapping(p) == {"description": "中文说明", "temperature": 0.5}


@pytest.mark.parametrize("enc,bom", [("utf-16-le", True), ("utf-16-be", False)])
def test_utf16_jsonl_is_named_once_with_the_iconv_command(enc, bom, demo_jsonl: Path, tmp_path: Path):
    import codecs

    rows = demo_jsonl.read_text(encoding="utf-8").splitlines()[:3]
    f = tmp_path / "u16.jsonl"
    f.write_bytes((codecs.BOM_UTF16_LE if bom else b"") + ("\n".join(rows) + "\n").encode(enc))
    name = "UTF-16LE" if bom else "UTF-16BE"
    hint = f'{name} text (a Windows "Unicode" export?), not UTF-8; JSONL must be UTF-8 (convert it with: iconv -f {name} -t UTF-8 u16.jsonl > u16.utf8.jsonl)'
    res = run("validate", f, code=1)
    assert res.stdout.splitlines() == [f"{f}: error: {hint}", "FAILED: 0 rows (0 labelled) in 1 file(s): 1 error(s), 0 warning(s)"]
    assert "GBK" not in res.output
    before = tree(tmp_path)
    for args in (["stats", f], ["shard", "--no-validate", "--input", f, "--out", tmp_path / "s"]):
        res = run(*args, code=EXIT_DATA)
        assert res.stderr.strip() == f"datakit: data error: DataError: {f}: {hint}"
    assert tree(tmp_path) == before


def test_ingest_reads_a_utf16_report(tmp_path: Path):
    import codecs

    from reportminer.data.ingest import ingest_table

    text = "# 盈利能力分析\n\n2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。\n"
    (tmp_path / "r.md").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (tmp_path / "u.md").write_text(text, encoding="utf-8")
    t = ingest_table(tmp_path)
    assert t.column("paragraph").to_pylist() == ["2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。"] * 2
    assert t.column("chapter_title").to_pylist() == ["盈利能力分析"] * 2


# ------------------------------------------------------------------ stdout: `--out -` and `--json -`


def test_export_to_stdout_writes_the_rows_there_and_no_file_named_dash(demo_jsonl: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run("shard", "--input", demo_jsonl, "--out", "s", "--rows-per-shard", "5")
    before = tree(tmp_path)
    res = run("export", "--input", "s", "--out", "-")
    assert res.stdout == demo_jsonl.read_text(encoding="utf-8")  # the JSONL and nothing else
    assert res.stderr.strip() == "wrote 12 rows to stdout"
    res = run("export", "--input", "s", "--out", "-", "--json", "e.json")
    assert res.stdout == demo_jsonl.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "e.json").read_text(encoding="utf-8")) == {"input": "s", "out": "-", "rows": 12}
    (tmp_path / "e.json").unlink()
    res = run("export", "--input", "s", "--out", "-", "--json", "-", code=2)
    assert "--out - and --json - both want stdout" in res.stderr
    assert tree(tmp_path) == before  # no file named '-'


def test_shard_export_and_ingest_print_json_on_stdout_and_the_rest_on_stderr(demo_jsonl: Path, tmp_path: Path):
    res = run("shard", "--input", demo_jsonl, "--out", tmp_path / "s", "--rows-per-shard", "5", "--json", "-")
    doc = json.loads(res.stdout)
    assert doc["rows"] == 12 and [Path(p).name for p in doc["shards"]] == [f"shard-0000{i}.parquet" for i in range(3)]
    assert doc["removed"] == [] and "wrote 12 rows to 3 shard(s)" in res.stderr
    res = run("shard", "--input", demo_jsonl, "--out", tmp_path / "s", "--json")  # bare --json: stdout
    assert json.loads(res.stdout)["removed"] == ["shard-00001.parquet", "shard-00002.parquet"]
    res = run("export", "--input", tmp_path / "s", "--out", tmp_path / "back.jsonl", "--json", "-")
    assert json.loads(res.stdout)["rows"] == 12 and "wrote 12 rows to" in res.stderr
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "a.md").write_text("# 盈利能力\n\n2025年前三季度，公司实现归母净利润18.6亿元，同比增长23.4%。\n", encoding="utf-8")
    (reports / "empty.md").write_text("# 只有标题\n", encoding="utf-8")
    res = run("ingest", "--input", reports, "--out", tmp_path / "corpus", "--json", "-")
    doc = json.loads(res.stdout)
    assert (doc["paragraphs"], doc["files"], doc["unchanged"], doc["empty_files"]) == (1, 2, 0, ["empty.md"])
    assert "wrote 1 paragraphs" in res.stderr
    res = run("ingest", "--input", reports, "--out", tmp_path / "corpus", "--json", tmp_path / "i.json")
    assert json.loads((tmp_path / "i.json").read_text(encoding="utf-8"))["unchanged"] == 1 and "wrote 1 paragraphs" in res.stdout


# ------------------------------------------------------------------ scripts/test.sh prepares, then runs


def _test_sh_copy(tmp_path: Path) -> Path:
    """scripts/test.sh in a copy of the repository layout whose setup.sh does nothing and whose .venv/bin/python
    is this interpreter (so that nothing is installed), with this checkout's tests to collect."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    repo = Path(__file__).resolve().parents[1]
    (root / "scripts" / "test.sh").write_text((repo / "scripts" / "test.sh").read_text())
    (root / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    (root / "scripts" / "setup.sh").chmod(0o755)
    (root / ".venv" / "bin").mkdir(parents=True)
    # A wrapper, not a symlink: Python finds its venv (pyvenv.cfg, site-packages, the editable install's .pth
    # finder) from the path it is started by, so a linked copy started as repo/.venv/bin/python was a bare
    # interpreter in a clean CI checkout ("No module named 'reportminer'"), where no srcview PYTHONPATH helps.
    wrapper = root / ".venv" / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    (root / "tests").symlink_to(repo / "tests")
    return root


def test_test_sh_prepares_the_models_then_runs_pytest_with_them(tmp_path: Path):
    from reportminer.data.models.demo import cache_root, demo_model_dir

    if not (demo_model_dir() / "SOURCE.json").exists():
        pytest.skip("needs the demo model in this machine's cache (scripts/test.sh prepares it)")
    cache = tmp_path / "cache"  # the real cache's models, seen through links: nothing is fetched or written there
    cache.mkdir()
    for sub in ("models", "tokenizers"):
        (cache / sub).symlink_to(cache_root() / sub)
    root = _test_sh_copy(tmp_path)
    env = {**os.environ, "REPORTMINER_CACHE": str(cache), "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(["bash", str(root / "scripts" / "test.sh"), "-q", "-p", "no:cacheprovider",
                        "tests/test_data_cli.py::test_fetch_model_prints_cached_path"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"under {cache}: demo model, Qwen3 tokenizer" in r.stderr and "1 passed" in r.stdout
    # PREPARE=0: nothing prepared, and a test that needs the model skips rather than fails
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    r = subprocess.run(["bash", str(root / "scripts" / "test.sh"), "-q", "-p", "no:cacheprovider", "-rs",
                        "tests/test_data_cli.py::test_fetch_model_prints_cached_path"],
                       cwd=root, env={**env, "REPORTMINER_CACHE": str(empty), "PREPARE": "0"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 skipped" in r.stdout and "[test] prepared" not in r.stderr, (r.stdout, r.stderr)
    assert list(empty.iterdir()) == []


def test_a_missing_model_fails_instead_of_skipping_under_test_sh(tmp_path: Path):
    env = {**os.environ, "REPORTMINER_CACHE": str(tmp_path), "REPORTMINER_PREPARED": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_data_cli.py::test_fetch_model_prints_cached_path"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "although scripts/test.sh prepared the models" in r.stdout, r.stdout


# ------------------------------------------------------------------ files that were skipped without a word


def test_an_upper_case_suffix_is_data_and_a_dangling_link_is_named(demo_jsonl: Path, tmp_path: Path):
    shards = tmp_path / "shards"
    run("shard", "--input", demo_jsonl, "--out", shards, "--rows-per-shard", "6")
    (shards / "shard-00001.parquet").rename(shards / "B.PARQUET")
    assert "OK: 12 rows (12 labelled) in 2 file(s)" in run("validate", shards).stdout
    assert json.loads(run("stats", shards, "--json", "-").stdout)["rows"] == 12
    assert "wrote 12 rows" in run("export", "--input", shards, "--out", tmp_path / "all.jsonl").stdout
    (tmp_path / "all.jsonl").unlink()
    before = tree(tmp_path)
    (shards / "gone.parquet").symlink_to(tmp_path / "unmounted" / "gone.parquet")
    for args in (["validate", shards], ["stats", shards], ["export", "--input", shards, "--out", tmp_path / "x.jsonl"]):
        res = run(*args, code=EXIT_DATA)
        assert res.stderr.strip() == (f"datakit: data error: DataError: {shards / 'gone.parquet'}: a dangling symbolic link "
                                      f"(to {tmp_path / 'unmounted' / 'gone.parquet'}); is the volume mounted? "
                                      "(remove the link to go on without it)"), args
    (shards / "gone.parquet").unlink()
    assert tree(tmp_path) == before


def test_interrupted_ingest_leaves_the_older_corpus_as_it_was(tmp_path: Path, monkeypatch):
    """The same all-or-nothing for `datakit ingest`: Ctrl-C after a few new shards, --out byte for byte."""
    from reportminer.data import ingest as ding

    reports = tmp_path / "reports"
    reports.mkdir()
    for i in range(30):
        (reports / f"r{i:02d}.md").write_text(
            f"# 第{i}篇\n\n" + "\n\n".join(f"公司第{k}段：营业收入同比增长{k + i}%，毛利率{30 + k}%。" for k in range(3)) + "\n",
            encoding="utf-8")
    out = tmp_path / "corpus"
    run("ingest", "--input", reports, "--out", out, "--rows-per-shard", "5")
    before = tree(tmp_path)
    for i in range(30):  # every report edited: every shard would be rewritten
        (reports / f"r{i:02d}.md").write_text((reports / f"r{i:02d}.md").read_text(encoding="utf-8") + "\n补充：订单充足。\n", encoding="utf-8")
    before.update({k: v for k, v in tree(tmp_path).items() if k.startswith("reports/")})
    real, calls = ding.write_parquet, []

    def interrupted_after_3(table, path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(table, path)

    monkeypatch.setattr(ding, "write_parquet", interrupted_after_3)
    res = run("ingest", "--input", reports, "--out", out, "--rows-per-shard", "5", code=EXIT_INTERRUPTED)
    assert res.stderr.strip() == f"datakit: interrupted; {out} is as it was (the new shards were written beside it and removed)"
    assert all(p.parent != out for p in calls)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("why", ["mount point", "parent not writable"])
def test_an_out_that_cannot_be_renamed_is_staged_inside_it(why, demo_jsonl: Path, tmp_path: Path, monkeypatch):
    """`--out /out` on a container's volume cannot be renamed, and a root-owned parent cannot hold the staging
    folder: the set is then staged in a hidden folder inside --out, and still never read half-done."""
    out = tmp_path / "vol"
    run("shard", "--input", demo_jsonl, "--out", out, "--rows-per-shard", "3")
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    if why == "mount point":
        monkeypatch.setattr(dio.os.path, "ismount", lambda p: Path(p) == out)
    else:
        real_mkdtemp = dio.tempfile.mkdtemp

        def no_parent(prefix=None, suffix=None, dir=None):
            if Path(dir) == tmp_path:
                raise PermissionError(13, "Permission denied")
            return real_mkdtemp(prefix=prefix, suffix=suffix, dir=dir)

        monkeypatch.setattr(dio.tempfile, "mkdtemp", no_parent)
    seen: list[list[str]] = []
    real = dio.write_parquet

    def write_and_look(table, path):
        seen.append(read_table(out).column("id").to_pylist())  # what a reader of --out sees meanwhile
        return real(table, path)

    monkeypatch.setattr(dio, "write_parquet", write_and_look)
    res = run("shard", "--input", demo_jsonl, "--out", out, "--rows-per-shard", "5")
    assert "wrote 12 rows to 3 shard(s)" in res.stdout and "(removed 1 stale shard(s))" in res.stdout
    old_ids = [f"demo-{i:02d}" for i in range(1, 13)]
    assert seen and all(ids == old_ids for ids in seen)  # the old set, whole, while the new one was written
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]
    assert read_table(out).num_rows == 12
