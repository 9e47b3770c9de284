"""Plain-text and Markdown reports -> paragraph shards, for the nightly corpus path.

Research reports arrive as converted text: Markdown from PDF converters, or plain text with Chinese
heading styles. The engine needs (id, chapter_title, paragraph) rows, so this module finds the sections
and paragraphs and drops what a model should not read (tables, images, captions, source lines).

Rules:
  - Markdown: `#`..`######` headings (and `===`/`---` underlined ones, whole-line bold text and numbered
    heading lines as in plain text, which PDF converters leave behind) become `chapter_title`; fenced code,
    tables, images, HTML comments and horizontal rules are skipped; emphasis and link markup is removed.
  - Plain text: a line is a title when it is short (<= 40 characters), does not end in sentence
    punctuation, and either has a Chinese report numbering (`一、行业概况`, `（三）盈利预测`, `1.2 盈利能力分析`,
    `第三章 …`) or stands alone as a short line (<= 25 characters) at the start of a block. Table-like lines
    (three or more cells split by tabs or wide spaces, mostly numbers) are skipped.
  - The title is the most recent heading with its numbering removed (`一、行业概况` -> `行业概况`); text before
    the first heading gets the file's name without suffix.
  - Paragraphs split on blank lines. Inside a block, lines are joined (hard-wrapped text), except that a
    line ending in 。！？ starts a new paragraph when every line of the block ends that way (one paragraph
    a line), when it is clearly shorter than the block's longest line, or when the next line is indented.
  - A paragraph longer than `max_chars` (600) is cut at sentence ends into near-equal pieces; a paragraph
    shorter than `min_chars` (8), a figure/table caption (`图1：…`, `表 3 …`) and a `资料来源：` line are dropped.

Ids are `<file path relative to --input>#<12 hex of sha256(title, paragraph)>`, with `-2`, `-3` … on
repeats inside one file. They depend on the content only, so a rerun over the same reports gives the same
ids. Each row also carries `source` (`file:line` of the paragraph's first line), `doc` (the relative file
path) and `para_index` (0-based order in the document, to reassemble it).

Shards are cut by content, not by position (content-defined chunking): in corpus order (files sorted,
paragraphs in document order) a shard ends after a paragraph whose id hashes to 0 modulo
`rows_per_shard` (so shards hold `rows_per_shard` rows on average), or at `MAX_SHARD_FACTOR` times that
at the latest, and is named after the hash of its last paragraph's id. Whether a paragraph ends a shard
depends on that paragraph alone, so adding, editing or deleting a report changes the shard(s) holding its
paragraphs (and at most the next one) and leaves every other shard byte-identical under its old name:
the engine skips them (its resume is per shard), and its row cache serves the unchanged rows of a
changed shard. Numbering shards along the sorted list instead re-cut every shard after the first change.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .io import DataError, commit_staged, stage_beside, wide_encoding, write_parquet
from .schema import CHAPTER_TITLE, ID, PARAGRAPH, SOURCE

DOC = "doc"
# A shard is cut at this many times rows_per_shard when no paragraph ended it (a geometric tail: about
# 2 % of shards would be longer without it).
MAX_SHARD_FACTOR = 4
PARA_INDEX = "para_index"
REPORT_SUFFIXES = (".md", ".markdown", ".txt")

END_PUNCT = "。！？!?；;…"
_CLAUSE_PUNCT = "，,、"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_CN_NUM = "一二三四五六七八九十百零〇"

# Numbered headings seen in Chinese sell-side reports. Each is only a title when also short and not
# ending like a sentence (checked separately).
_NUMBERED_HEADINGS = (
    re.compile(rf"^第[{_CN_NUM}\d]+[章节部分篇]"),  # 第三章 盈利预测
    re.compile(rf"^[{_CN_NUM}]+[、．.]\s*\S"),  # 一、行业概况
    re.compile(rf"^[（(][{_CN_NUM}\d]+[）)]\s*\S"),  # （三）盈利预测 / (2) 风险
    re.compile(r"^\d{1,2}(?:\.\d{1,2}){0,3}(?:[、．]|\.(?!\d)|\s)\s*\S"),  # 1、概述 / 3. 风险 / 1.2 盈利能力分析
    re.compile(r"^\d{1,2}(?:\.\d{1,2}){1,3}\s*[\u4e00-\u9fff]"),  # 1.2盈利能力分析
)
_NUMBERING_PREFIX = re.compile(
    rf"^(?:第[{_CN_NUM}\d]+[章节部分篇]|[{_CN_NUM}]+[、．.]|[（(][{_CN_NUM}\d]+[）)]|\d{{1,2}}(?:\.\d{{1,2}}){{0,3}}[、．.]?)\s*"
)
_CAPTION = re.compile(rf"^(?:图表|附图|附表|图|表)\s*[{_CN_NUM}\d]+")
_SOURCE_LINE = re.compile(r"^(?:资料|数据)?来源\s*[：:]")
_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_MD_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_MD_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_MD_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|<img\b[^>]*>", re.I)
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_LIST = re.compile(r"^\s*[-*+]\s+")
_MD_BOLD_LINE = re.compile(r"^\s*(?:\*\*|__)([^*_]+)(?:\*\*|__)\s*[：:]?\s*$")
_MD_EMPH = re.compile(r"(\*\*|__|`)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CELL_SPLIT = re.compile(r"\t+|\s{2,}|\u3000+")
_NUMERIC_CELL = re.compile(r"^[-+]?[\d,.]+%?[A-Za-z]*$|^[-—–/]+$")


@dataclass(frozen=True)
class IngestConfig:
    max_chars: int = 600  # longer paragraphs are cut at sentence ends (the seed's longest is 307)
    min_chars: int = 8  # shorter ones are dropped (page furniture, stray labels)
    title_max_chars: int = 40  # a numbered heading longer than this is a sentence, not a title
    short_title_chars: int = 25  # an unnumbered stand-alone line up to this length may be a title
    strip_numbering: bool = True  # 一、行业概况 -> 行业概况


@dataclass(frozen=True)
class Paragraph:
    id: str
    chapter_title: str
    paragraph: str
    source: str
    doc: str
    para_index: int


@dataclass
class IngestResult:
    files: int = 0
    paragraphs: int = 0
    shards: list[Path] = field(default_factory=list)
    unchanged: int = 0  # shards whose file already held exactly these rows (left untouched)
    removed_stale: list[Path] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Reading


def report_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in REPORT_SUFFIXES and not f.name.startswith("."))
        if not files:
            raise DataError(f"{p}: no report files ({', '.join('*' + s for s in REPORT_SUFFIXES)}) in this folder")
        return files
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    return [p]


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), UTF-16/32 (Windows "Unicode", by BOM or NUL pattern: data.io.wide_encoding),
    else GB18030, which Chinese Windows tools still write."""
    raw = path.read_bytes()
    wide = wide_encoding(raw[:512])
    if wide:
        try:
            return raw.decode(wide).lstrip("\ufeff")
        except UnicodeDecodeError:
            raise DataError(f"{path}: starts like {wide} text but does not decode as it") from None
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise DataError(f"{path}: neither UTF-8 nor GB18030 text")


# ----------------------------------------------------------------------------------------------------------
# Line classification


def _ends_sentence(s: str) -> bool:
    s = s.rstrip().rstrip("”’」』)）\"'")
    return bool(s) and s[-1] in END_PUNCT


def _looks_like_title_text(s: str, max_chars: int) -> bool:
    s = s.strip()
    if not s or len(s) > max_chars or _ends_sentence(s) or s[-1] in _CLAUSE_PUNCT:
        return False
    if _CAPTION.match(s) or _SOURCE_LINE.match(s):
        return False
    letters = sum(1 for ch in s if ch.isalpha())
    digits = sum(1 for ch in s if ch.isdigit())
    return letters > 0 and digits <= max(2, len(s) // 3)


def is_numbered_heading(line: str, cfg: IngestConfig = IngestConfig()) -> bool:
    s = line.strip()
    return any(p.match(s) for p in _NUMBERED_HEADINGS) and _looks_like_title_text(s, cfg.title_max_chars)


def is_table_line(line: str) -> bool:
    s = line.strip()
    if s.count("|") >= 2:
        return True
    cells = [c for c in _CELL_SPLIT.split(s) if c]
    if len(cells) < 3:
        return False
    numeric = sum(1 for c in cells if _NUMERIC_CELL.match(c))
    return numeric * 2 >= len(cells)


def clean_title(title: str, cfg: IngestConfig = IngestConfig()) -> str:
    t = _MD_EMPH.sub("", _MD_LINK.sub(r"\1", title)).strip()
    if cfg.strip_numbering:
        stripped = _NUMBERING_PREFIX.sub("", t).strip()
        t = stripped or t
    return t.rstrip("：:").strip()


def _join(lines: list[str]) -> str:
    """Join hard-wrapped lines: no space between CJK characters, one between Latin words."""
    out = ""
    for ln in lines:
        ln = ln.strip()
        if not ln:
            continue
        if out and out[-1].isascii() and out[-1].isalnum() and ln[0].isascii() and ln[0].isalnum():
            out += " "
        out += ln
    return out


def _indented(line: str) -> bool:
    return line.startswith(("\u3000", "  ", "\t"))


def _split_block(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Paragraphs inside one blank-line-separated block, as (first line number, lines)."""
    if len(lines) <= 1:
        return [(lines[0][0], [lines[0][1]])] if lines else []
    longest = max(len(t.strip()) for _, t in lines)
    one_per_line = all(_ends_sentence(t) for _, t in lines)
    paras: list[tuple[int, list[str]]] = []
    cur: list[str] = []
    start = lines[0][0]
    for i, (n, t) in enumerate(lines):
        if not cur:
            start = n
        cur.append(t)
        nxt = lines[i + 1][1] if i + 1 < len(lines) else None
        if nxt is None:
            break
        if _ends_sentence(t) and (one_per_line or len(t.strip()) < 0.85 * longest or _indented(nxt)):
            paras.append((start, cur))
            cur = []
    if cur:
        paras.append((start, cur))
    return paras


# ----------------------------------------------------------------------------------------------------------
# Parsers: (title or None, paragraph text, first line) events; a title event has empty text.

Event = tuple[str | None, str, int]


def parse_markdown(text: str, cfg: IngestConfig = IngestConfig()) -> Iterator[Event]:
    text = _HTML_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    lines = text.splitlines()
    block: list[tuple[int, str]] = []
    fence: str | None = None

    def flush() -> Iterator[Event]:
        for start, para in _split_block(block):
            yield None, _join(para), start
        block.clear()

    for n, raw in enumerate(lines, 1):
        if fence is not None:
            if raw.strip().startswith(fence):
                fence = None
            continue
        m = _MD_FENCE.match(raw)
        if m:
            yield from flush()
            fence = m.group(1)
            continue
        h = _MD_HEADING.match(raw)
        if h:
            yield from flush()
            yield clean_title(h.group(2), cfg), "", n
            continue
        if _MD_SETEXT.match(raw) and len(block) == 1 and not _MD_RULE.match(block[0][1]):
            # `Title` underlined by === or ---: the one-line block above is a heading.
            title_line = block[0]
            block.clear()
            yield clean_title(title_line[1], cfg), "", title_line[0]
            continue
        if _MD_RULE.match(raw) or _MD_TABLE_SEP.match(raw) or raw.strip().startswith("|") or is_table_line(raw):
            yield from flush()
            continue
        bold = _MD_BOLD_LINE.match(raw)
        if (bold and _looks_like_title_text(bold.group(1), cfg.title_max_chars)) or is_numbered_heading(raw, cfg):
            # PDF converters often leave headings as bold or numbered lines instead of `#`.
            yield from flush()
            yield clean_title(bold.group(1) if bold else raw, cfg), "", n
            continue
        line = _MD_IMAGE.sub("", raw)
        line = re.sub(r"^\s*(>\s?)+", "", line)
        line = _MD_LIST.sub("", line)
        line = _MD_EMPH.sub("", _MD_LINK.sub(r"\1", line))
        if not line.strip():
            yield from flush()
            continue
        block.append((n, line))
    yield from flush()


def parse_plain(text: str, cfg: IngestConfig = IngestConfig()) -> Iterator[Event]:
    lines = text.splitlines()
    blocks: list[list[tuple[int, str]]] = []
    cur: list[tuple[int, str]] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            if cur:
                blocks.append(cur)
                cur = []
            continue
        cur.append((n, raw.rstrip()))
    if cur:
        blocks.append(cur)

    for block in blocks:
        body: list[tuple[int, str]] = []
        for i, (n, t) in enumerate(block):
            s = t.strip()
            if is_table_line(t):
                continue
            heading = is_numbered_heading(s, cfg)
            if not heading and not body and i == 0 and _looks_like_title_text(s, cfg.short_title_chars) and not _CAPTION.match(s):
                # An unnumbered short line opening a block is a title when it stands alone or is clearly
                # shorter than the text under it (the first line of a wrapped paragraph is full width).
                nxt = block[1][1].strip() if len(block) > 1 else ""
                heading = not nxt or len(s) <= 0.6 * len(nxt)
            if heading:
                for start, para in _split_block(body):
                    yield None, _join(para), start
                body = []
                yield clean_title(s, cfg), "", n
                continue
            body.append((n, t))
        for start, para in _split_block(body):
            yield None, _join(para), start


# ----------------------------------------------------------------------------------------------------------
# Paragraph post-processing


def _keep(p: str, cfg: IngestConfig) -> bool:
    s = p.strip()
    if len(s) < cfg.min_chars:
        return False
    if _SOURCE_LINE.match(s) or (_CAPTION.match(s) and len(s) <= 80 and not _ends_sentence(s)):
        return False
    return any(ch.isalpha() for ch in s)


def split_long(p: str, max_chars: int) -> list[str]:
    """Cut at sentence ends into about equal pieces of at most `max_chars` (a longer sentence is cut at a
    clause mark, else hard)."""
    if len(p) <= max_chars:
        return [p]
    sentences = [s for s in re.split(rf"(?<=[{re.escape(END_PUNCT)}])", p) if s]
    units: list[str] = []
    for s in sentences:
        while len(s) > max_chars:
            cut = max(s.rfind(c, 0, max_chars) for c in _CLAUSE_PUNCT)
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            units.append(s[:cut])
            s = s[cut:]
        if s:
            units.append(s)
    target = len(p) / math.ceil(len(p) / max_chars)
    pieces: list[str] = []
    cur = ""
    for u in units:
        if cur and (len(cur) + len(u) > max_chars or len(cur) >= target):
            pieces.append(cur)
            cur = ""
        cur += u
    if cur:
        pieces.append(cur)
    return [x.strip() for x in pieces if x.strip()]


def paragraphs_of_text(text: str, rel: str, markdown: bool, cfg: IngestConfig = IngestConfig()) -> Iterator[Paragraph]:
    """Paragraph rows of one report's text; `rel` names it in ids and sources."""
    events = parse_markdown(text, cfg) if markdown else parse_plain(text, cfg)
    title = Path(rel).stem
    seen: dict[str, int] = {}
    index = 0
    for t, para, line in events:
        if t is not None:
            title = t or title
            continue
        if not _keep(para, cfg):
            continue
        for piece in split_long(para, cfg.max_chars):
            if not _keep(piece, cfg):
                continue
            digest = hashlib.sha256(f"{title}\x00{piece}".encode()).hexdigest()[:12]
            seen[digest] = seen.get(digest, 0) + 1
            pid = f"{rel}#{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")
            yield Paragraph(pid, title, piece, f"{rel}:{line}", rel, index)
            index += 1


def iter_paragraphs(path: str | os.PathLike, cfg: IngestConfig = IngestConfig(), progress: bool = False) -> Iterator[Paragraph]:
    from tqdm import tqdm

    root = Path(path)
    for f in tqdm(report_files(root), desc="ingest", unit=" files", disable=not progress):
        rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
        yield from paragraphs_of_text(read_text(f), rel, f.suffix.lower() in (".md", ".markdown"), cfg)


def _to_table(rows: list[Paragraph]) -> pa.Table:
    return pa.table(
        {
            ID: pa.array([r.id for r in rows], pa.string()),
            CHAPTER_TITLE: pa.array([r.chapter_title for r in rows], pa.string()),
            PARAGRAPH: pa.array([r.paragraph for r in rows], pa.string()),
            SOURCE: pa.array([r.source for r in rows], pa.string()),
            DOC: pa.array([r.doc for r in rows], pa.string()),
            PARA_INDEX: pa.array([r.para_index for r in rows], pa.int32()),
        }
    )


def ingest_table(path: str | os.PathLike, cfg: IngestConfig = IngestConfig()) -> pa.Table:
    """All paragraphs as one table (small inputs, tests); use `ingest_to_shards` for a corpus."""
    rows = list(iter_paragraphs(path, cfg))
    if not rows:
        raise DataError(f"{path}: no paragraphs found")
    return _to_table(rows)


def _id_hash(pid: str) -> bytes:
    return hashlib.sha256(pid.encode()).digest()


def ends_shard(pid: str, rows_per_shard: int) -> bool:
    """Whether the paragraph with this id closes its shard (true for about 1 in `rows_per_shard`)."""
    return int.from_bytes(_id_hash(pid)[:8], "big") % rows_per_shard == 0


def _write_shard(rows: list[Paragraph], out_dir: Path, stage: Path, res: IngestResult) -> None:
    """`shard-<12 hex of the last id's hash>.parquet` into the staging folder; an existing file in `out_dir`
    with the same rows is hard-linked there instead (same inode, so its mtime too: the engine's fingerprint
    takes its fast path after the swap)."""
    name = f"shard-{_id_hash(rows[-1].id).hex()[:12]}.parquet"
    old, path = out_dir / name, stage / name
    table = _to_table(rows)
    try:
        same = old.is_file() and pq.read_table(old).equals(table)
    except Exception:  # a damaged old file is simply replaced
        same = False
    if same:
        try:
            os.link(old, path)
        except OSError:  # a file system without hard links: a copy with the old mtime
            shutil.copy2(old, path)
        res.unchanged += 1
    else:
        write_parquet(table, path)
    res.shards.append(out_dir / name)


def ingest_to_shards(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    rows_per_shard: int = 1000,
    cfg: IngestConfig = IngestConfig(),
    progress: bool = False,
) -> IngestResult:
    """Stream paragraphs into `shard-<hash>.parquet` files of about `rows_per_shard` rows, cut by content
    (see the module docstring) so unchanged reports keep their shards; memory stays at one shard.

    The new set is built in a folder beside `out_dir` (unchanged shards hard-linked, not rewritten) and
    swapped in whole at the end (data.io.commit_staged), as `datakit shard` does: an interrupted ingest
    leaves `out_dir` as it was, never new shards among stale ones. Nothing is swapped in when no
    paragraph was found."""
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be >= 1")
    res = IngestResult()
    out = Path(out_dir)
    stage = stage_beside(out)
    try:
        _ingest_into(path, out, stage, rows_per_shard, cfg, progress, res)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return res


def _ingest_into(path: str | os.PathLike, out: Path, stage: Path, rows_per_shard: int, cfg: IngestConfig,
                 progress: bool, res: IngestResult) -> None:
    buf: list[Paragraph] = []
    docs_seen: set[str] = set()
    for p in iter_paragraphs(path, cfg, progress):
        docs_seen.add(p.doc)
        buf.append(p)
        res.paragraphs += 1
        if ends_shard(p.id, rows_per_shard) or len(buf) >= MAX_SHARD_FACTOR * rows_per_shard:
            _write_shard(buf, out, stage, res)
            buf = []
    if buf:
        _write_shard(buf, out, stage, res)
    root = Path(path)
    files = report_files(root)
    res.files = len(files)
    res.empty_files = [
        (f.relative_to(root).as_posix() if root.is_dir() else f.name)
        for f in files
        if (f.relative_to(root).as_posix() if root.is_dir() else f.name) not in docs_seen
    ]
    if res.paragraphs:
        keep = {p.name for p in res.shards}
        res.removed_stale = [out / n for n in commit_staged(stage, out) if n not in keep]
