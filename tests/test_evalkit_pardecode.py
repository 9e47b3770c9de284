"""evalkit's one JSONL reader (issue 9 item 7, issue 18 item 4): byte ranges decoded in worker processes
or in this one (pardecode, jsonl_chunks), the contract breaches and missing fields answered without
jsonschema, cydifflib, scoring in parts, and the workers started before the CLI's heavy imports. Each must
give exactly what the plain reference reader gives (tests/evalkit_reference.py: json.loads and
`parse_output` a line): the frames are compared whole, the messages word for word."""
from __future__ import annotations

import difflib
import json
import random
import subprocess
import sys
from pathlib import Path

import evalkit_reference as reference
import polars as pl
import pytest

from reportminer.data.io import DataError
from reportminer.evalkit import fastload, jsonl_chunks
from reportminer.evalkit.loaders import load_gold, load_predictions
from reportminer.evalkit.matchers import MatchStats, make_matcher
from reportminer.evalkit.pardecode import Prefetch
from reportminer.evalkit.score import build_cases, score_cases, score_in_parts, score_paths

NAMES = ["毛利率", "营业收入", "净利润", "现金流量净额", "营收", "归母净利润", "毛利", "率", "  ", "x"]


def metric(name: str, typ: str = "financial") -> dict:
    return {"metric_name": name, "metric_type": typ, "score": 0.9, "reason": "理由"}


def gold_rows(n: int, rng: random.Random, with_ids: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        names = rng.sample(NAMES[:7], rng.randint(0, 4))
        row = {"type": rng.choice("ABCD"), "input": {"chapter_title": "章", "paragraph": "段落" * rng.randint(1, 40)},
               "output": {"analysis": "分析", "metrics": [metric(x, rng.choice(["financial", "business"])) for x in names]}}
        if rng.random() < 0.1:
            row["scenario"] = "single_metric"
        if with_ids:
            row["id"] = f"c{i}" if rng.random() < 0.9 else i  # some int ids: str() of them
        rows.append(row)
    return rows


def pred_output(rng: random.Random, plain_only: bool = False) -> object:
    """Every kind of answer: plainly valid, over the metric count, repeated or blank names, a contract
    breach per metric, raw text, fenced JSON, prose, null (`plain_only`: the first four only, so that
    whole ranges decode in one call)."""
    k = rng.random()
    names = [rng.choice(NAMES) for _ in range(rng.randint(0, 6))]
    ok = {"analysis": "分析", "metrics": [metric(x, rng.choice(["financial", "business"])) for x in names]}
    if k < 0.85 or plain_only:
        return ok
    if k < 0.88:
        return {**ok, "metrics": [{**metric("名" * 25)}]}  # name too long
    if k < 0.90:
        return {**ok, "metrics": [{**metric("x"), "score": 1.5}]}
    if k < 0.92:
        return json.dumps(ok, ensure_ascii=False)
    if k < 0.94:
        return "```json\n" + json.dumps(ok) + "\n```"
    if k < 0.96:
        return "no json here"
    if k < 0.98:
        return {**ok, "extra": 1}
    return None


def pair_kind(pred: Path) -> str:
    """"contract" when every answer of `pred` is an object (the fixture's contract-shaped variant)."""
    rows = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    return "contract" if all(isinstance(r["output"], dict) and "extra" not in r["output"] and all(
        len(m["metric_name"]) <= 24 and m["score"] <= 1 for m in r["output"]["metrics"]) for r in rows) else "any"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def frames(gold: Path, pred: Path, workers: int | None | str):
    """(gold frame, predictions frame): with `workers` processes (None: no prefetch, in process;
    "reference": the plain reference reader)."""
    if workers == "reference":
        g = reference.gold(gold)
        return g, reference.preds(pred, g)
    if workers is None:
        g = load_gold(gold)
        return g, load_predictions(pred, g)[0].frame
    assert isinstance(workers, int)
    with Prefetch([("gold", gold), ("pred", pred)], workers=workers, min_bytes=0) as pre:
        assert pre.workers == workers
        g = load_gold(gold, pre=pre)
        return g, load_predictions(pred, g, pre=pre)[0].frame


@pytest.fixture(params=["any answer", "contract-shaped answers"])
def pair(tmp_path: Path, request) -> tuple[Path, Path]:
    rng = random.Random(7)
    gold = gold_rows(600, rng)
    ids = [str(r["id"]) for r in gold]
    plain = request.param == "contract-shaped answers"
    preds = [{"id": i, "output": pred_output(rng, plain)} for i in ids if rng.random() < 0.95]
    rng.shuffle(preds[:100])  # some out of gold order: the hash join, not the side-by-side one
    for p in preds[::7]:
        p["scenario"] = rng.choice(["s1", 5])
    return write_jsonl(tmp_path / "gold.jsonl", gold), write_jsonl(tmp_path / "pred.jsonl", preds)


def test_workers_give_the_frames_of_one_process_and_of_the_reference(pair, monkeypatch):
    gold, pred = pair
    slow_g, slow_p = frames(gold, pred, "reference")
    parsed = []
    parsed_row = jsonl_chunks.parsed_row
    monkeypatch.setattr(jsonl_chunks, "parsed_row", lambda *a: parsed.append(a) or parsed_row(*a))
    here_g, here_p = frames(gold, pred, None)
    # Contract-shaped answers decode in one call a batch (breaches answered by `breach`); only answers of
    # other kinds go through `parse_output`, each on its own.
    assert bool(parsed) == (pair_kind(pred) == "any")
    for workers in (2, 3):  # 3 ranges a file: lines numbered across range boundaries
        g, p = frames(gold, pred, workers)
        assert g.equals(slow_g) and g.equals(here_g), workers
        assert p.equals(slow_p) and p.equals(here_p), workers
    assert (slow_p["json_valid"].sum() < slow_p.height) == (pair_kind(pred) == "any")  # invalid JSON met
    assert slow_p["error"].str.contains("metrics; the contract allows").any()
    assert slow_p["error"].str.contains("duplicate metric_name").any()


def test_workers_without_ids_and_over_a_folder(tmp_path: Path, monkeypatch):
    rng = random.Random(3)
    folder = tmp_path / "gold"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", gold_rows(120, rng, with_ids=False))
    write_jsonl(folder / "sub" / "b.jsonl", gold_rows(90, rng, with_ids=False))
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"output": pred_output(rng)} for _ in range(200)])  # row k: case k
    slow = frames(folder, pred, "reference")
    fast = frames(folder, pred, 3)
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])
    assert fast[0]["id"][0] == "a.jsonl:1" and fast[0]["id"][120] == "sub/b.jsonl:1"
    assert fast[1]["source"][199].endswith("pred.jsonl:200")


@pytest.mark.parametrize("where", ["gold", "pred"])
def test_a_bad_line_late_in_a_file_is_named_by_its_line(pair, where: str):
    """A range holding an error is named line by line: the same message in and out of process, the
    right file and line (here in the last range of the file)."""
    gold, pred = pair
    path = gold if where == "gold" else pred
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(len(lines) - 3, "{oops\n")
    path.write_text("".join(lines), encoding="utf-8")
    msgs = []
    for workers in ("reference", None, 2, 3):
        with pytest.raises(DataError) as e:
            frames(gold, pred, workers)
        msgs.append(str(e.value))
    assert len(set(msgs[1:])) == 1 and msgs[1].startswith(msgs[0]), msgs  # gold adds the formats it may be
    assert f"{path.name}:{len(lines) - 3}: invalid JSON" in msgs[0]


def test_mixed_ids_too_many_rows_and_no_output_are_named(tmp_path: Path):
    rng = random.Random(5)
    gold = write_jsonl(tmp_path / "gold.jsonl", gold_rows(50, rng))
    for rows, text in (([{"id": "c1", "output": None}] + [{"output": None}] * 3, "pred.jsonl:2: some rows have an `id` and some do not"),
                       ([{"output": None}] * 51, "pred.jsonl:51: prediction row 51 has no gold case 51"),
                       ([{"output": None}, {"outptu": None}], "pred.jsonl:2: prediction row has no `output`")):
        pred = write_jsonl(tmp_path / "pred.jsonl", rows)
        msgs = []
        for workers in (None, 2):
            with pytest.raises(DataError) as e:
                frames(gold, pred, workers)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1] and text in msgs[0], msgs


@pytest.mark.parametrize("worker", ["missing", "reads then dies", "dies at once"])
def test_a_worker_that_cannot_start_or_dies_costs_time_not_results(pair, worker: str, monkeypatch, tmp_path: Path):
    gold, pred = pair
    slow = frames(gold, pred, "reference")
    exe = {"missing": tmp_path / "no-python", "dies at once": Path("/bin/false"),
           "reads then dies": tmp_path / "dies.sh"}[worker]
    (tmp_path / "dies.sh").write_text("#!/bin/sh\ncat >/dev/null\nexit 1\n")
    (tmp_path / "dies.sh").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(exe))  # no worker answers: every range is read here
    fast = frames(gold, pred, 2)
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])


def test_line_count_accepts_only_one_object_a_line():
    lc = jsonl_chunks.line_count
    ok = b'{"a": 1}\n{"b": {"c": 2}}\n'
    assert lc(ok, 0, len(ok)) == 2 and lc(ok.rstrip(b"\n"), 0, len(ok) - 1) == 2 and lc(b"", 0, 0) == 0
    for bad in (b'{"a": 1}\n\n{"b": 2}\n', b'{"a": 1}\r\n', b'{"a":\n 1}\n{"b": 2} {"c": 3}\n', b'{"a": 1} \n',
                b' {"a": 1}\n', b'[1]\n', b'{"a": 1}\n{"b": 2}\n  '):
        assert lc(bad, 0, len(bad)) is None, bad


def test_answers_read_without_jsonschema_are_what_data_parse_says():
    """Answers whose present values meet the contract but whose count, names (blank, repeated) or fields
    (no analysis, metric_type, score or reason) do not: what `breach` says (no jsonschema), in one
    call a batch and on their own, equals `parse_output` answer for answer; so do answers it leaves to
    `parse_output` (a null, a value out of range, an unknown key)."""
    rng = random.Random(0)
    pool = ["毛利率", "营业收入", "净利润", "  ", "x", "现金流", "\u3000", "\x1c"]
    answers = []
    for _ in range(3000):
        ms = []
        for _ in range(rng.randint(0, 12)):
            m = {"metric_name": rng.choice(pool), "metric_type": rng.choice(["financial", "business"]),
                 "score": rng.random(), "reason": "r"}
            for f in ("metric_type", "score", "reason"):
                if rng.random() < 0.2:
                    del m[f]
            if rng.random() < 0.02:
                m[rng.choice(["reason", "score", "extra"])] = None
            ms.append(m)
        out: dict = {"analysis": "a", "metrics": ms}
        if rng.random() < 0.2:
            del out["analysis"]
        answers.append(out)
    for out in answers:
        got = jsonl_chunks.output_row(json.dumps(out, ensure_ascii=False).encode())
        assert got == reference.answer(out), out
    buf = "".join(json.dumps({"id": str(i), "output": o}, ensure_ascii=False) + "\n" for i, o in enumerate(answers)).encode()
    chunk = jsonl_chunks.pred_chunk(buf, 0, len(buf))
    assert chunk is not None and chunk["at"] is None
    want = [reference.answer(o) for o in answers]
    assert pl.Series(fastload.arrow_strings(chunk["error"], len(answers))).to_list() == [w[3] for w in want]
    assert list(chunk["valid"]) == [w[2] for w in want]
    names = pl.Series(fastload.list_column(chunk["names"], chunk["counts"], len(answers))).to_list()
    types = pl.Series(fastload.list_column(chunk["types"], chunk["counts"], len(answers))).to_list()
    assert names == [w[0] for w in want] and types == [w[1] for w in want]


def test_cydifflib_ratios_are_difflibs():
    cydifflib = pytest.importorskip("cydifflib")
    rng = random.Random(1)
    alphabet = "ab率利毛润营收入净"  # few letters: many equal blocks, the tie rules matter
    pairs = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))),
              "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))) for _ in range(20000)]
    pairs += [("".join(rng.choice("abc") for _ in range(rng.randint(190, 260))),
               "".join(rng.choice("abc") for _ in range(rng.randint(190, 260)))) for _ in range(200)]  # autojunk
    for a, b in pairs:
        assert cydifflib.SequenceMatcher(None, a, b).ratio() == difflib.SequenceMatcher(None, a, b).ratio(), (a, b)


@pytest.mark.parametrize("matcher", ["difflib", "upstream", "fuzzy"])
def test_scoring_in_parts_gives_the_same_cases(pair, matcher: str, monkeypatch):
    gold, pred = pair
    g, p = frames(gold, pred, None)
    cases = build_cases(g, p)
    m = make_matcher(matcher)
    whole_stats, part_stats = MatchStats(), MatchStats()
    whole = score_cases(cases, m, stats=whole_stats)
    parts = score_in_parts(cases, m, "run", part_stats, parts=3)
    assert parts.equals(whole)
    assert (part_stats.cases, part_stats.pairs, part_stats.looped_cases) == (
        whole_stats.cases, whole_stats.pairs, whole_stats.looped_cases)


def test_the_command_gives_what_the_api_gives(pair, tmp_path: Path):
    """`python -m reportminer.evalkit.cli score` (workers started from the command line) writes the
    summary `score_paths` returns; a prefetch for other paths is stopped and not used."""
    gold, pred = pair
    out = tmp_path / "s.json"
    subprocess.run([sys.executable, "-m", "reportminer.evalkit.cli", "score", "--gold", str(gold), str(pred),
                    "--matcher", "difflib", "--json", str(out), "-q"], check=True)
    (want,) = score_paths(gold, pred, make_matcher("difflib"))
    got = json.loads(out.read_text())
    assert {k: got[k] for k in ("n", "hits", "f1", "by_scenario")} == json.loads(json.dumps(
        {k: want.summary[k] for k in ("n", "hits", "f1", "by_scenario")}))
    other = Prefetch([("gold", gold), ("pred", gold)], workers=2, min_bytes=0)
    (r,) = score_paths(gold, pred, make_matcher("difflib"), prefetch=other)
    assert r.cases.equals(want.cases)
    assert all(proc.poll() is not None for proc in other._procs)


def test_a_large_pair_is_split_and_scored_in_parts(tmp_path: Path, monkeypatch):
    """Above the thresholds (forced low here) the whole `score_paths` runs the parallel paths."""
    from reportminer.evalkit import pardecode, score

    rng = random.Random(11)
    gold = write_jsonl(tmp_path / "gold.jsonl", gold_rows(300, rng))
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": str(r["id"]), "output": pred_output(rng)}
                                                  for r in json.loads("[" + ",".join(gold.read_text().splitlines()) + "]")])
    (serial,) = score_paths(gold, pred, make_matcher("difflib"))
    monkeypatch.setattr(pardecode, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(pardecode.Prefetch.__init__, "__defaults__", (None, 0))
    monkeypatch.setattr(score, "PARTS_MIN_CASES", 10)
    monkeypatch.setattr(pardecode, "cpu_count", lambda: 2)
    started, parts = [], []
    popen, orig_parts = pardecode.subprocess.Popen, score.score_cases
    monkeypatch.setattr(pardecode.subprocess, "Popen", lambda *a, **k: started.append(a) or popen(*a, **k))
    monkeypatch.setattr(score, "score_cases", lambda cases, *a, **k: parts.append(cases.height) or orig_parts(cases, *a, **k))
    (par,) = score_paths(gold, pred, make_matcher("difflib"))
    assert len(started) == 2 and parts == [150, 150]  # two workers decoded, two parts scored
    assert par.cases.equals(serial.cases) and par.summary == serial.summary
    assert isinstance(par.cases, pl.DataFrame) and par.cases.height == 300


def test_ranges_decoded_in_many_small_batches_give_the_slow_paths_frames(pair, tmp_path: Path, monkeypatch):
    """A range is decoded a batch at a time and the batches' columns joined (`jsonl_chunks.merge`): with
    batches of a few lines, batches of every form meet (all-null, some null, NUL inside a value, no
    values), and bulk and row-by-row batches in one range."""
    gold, pred = pair
    rows = [json.loads(line) for line in gold.read_text(encoding="utf-8").splitlines()]
    for k, r in enumerate(rows):
        if k % 50 < 20:
            r.pop("scenario", None)  # whole batches without a scenario, then some with
            r.pop("type", None)
        if k == 333:
            r["output"]["metrics"] = [metric("毛\x00利率")]  # one value with a NUL: Arrow buffers for all
        if 100 <= k < 110:
            r["output"]["metrics"] = []  # a batch without names
    gold = write_jsonl(tmp_path / "gold2.jsonl", rows)
    slow_g, slow_p = frames(gold, pred, "reference")
    cuts = []
    batches = jsonl_chunks.batches
    monkeypatch.setattr(jsonl_chunks, "batches", lambda *a: cuts.append(1) or batches(*a))
    for size in (1, 700, 5000):
        monkeypatch.setattr(jsonl_chunks, "BATCH_BYTES", size)
        g, p = frames(gold, pred, None)
        assert g.equals(slow_g), size
        assert p.equals(slow_p), size
    assert cuts and slow_g["gold_names"].list.explode().str.contains("\x00").any()
    assert slow_g["scenario"].null_count() > 0


def test_join_strings_is_strings_of_the_whole_column():
    cols = [["a", "b"], [None, None], [], ["", None, "c"], ["x\x00y"], ["z"], [None]]
    for lo in range(len(cols)):
        for hi in range(lo, len(cols) + 1):
            parts = cols[lo:hi]
            whole = [v for c in parts for v in c]
            got = jsonl_chunks.join_strings([jsonl_chunks.strings(c) for c in parts])
            assert pl.Series(fastload.arrow_strings(got, len(whole))).to_list() == whole, parts
