"""OpenAI batch files in and out: the format of `vllm run-batch` (and of OpenAI's Batch API).

In: a JSONL file whose lines are batch requests,

    {"custom_id": "r-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "...", "messages": [{"role": "system", ...}, {"role": "user", "content": "..."}]}}

is read as a shard (`engine run --input requests.jsonl`): `id` is the custom_id; the paragraph and title
come from the last user message, split back into the two fields when it is this project's user turn
(`data.prompt.USER_TEMPLATE`, `【章节标题】…\n【段落内容】…`), else the whole user text is the paragraph and
the title is empty. The request's own system prompt, model and sampling fields are not used: the engine
renders every row with the project's prompt and settings, so a batch file made for another prompt gets
the same extraction as any other input. Issue 19: such a file used to run as seed-format JSONL and turn
every row into `empty_paragraph`; a JSONL line that is neither format is now refused with its line.

Out: `write_batch_output(results, path)` writes the result rows as batch output lines,

    {"id": "rm-<hash>", "custom_id": "r-1", "response": {"status_code": 200, "request_id": "...",
     "body": {"object": "chat.completion", "model": ADAPTER, "choices": [{"index": 0, "message":
       {"role": "assistant", "content": RAW}, "finish_reason": "stop"}], "usage": {...}}}, "error": null}

one line per (row, adapter), `model` naming the adapter column. A row the model answered carries its raw
text (what `evalkit score` parses, as it parses `vllm run-batch` output); a row that never reached the
model (empty or too-long paragraph, a server that gave up) has `response: null` and `error: {code, message}`
with the engine's reason, as the Batch API reports failed requests.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from reportminer.data.errors import DataError
from reportminer.data.io import JsonlRow
from reportminer.data.prompt import USER_TEMPLATE
from reportminer.data.schema import CHAPTER_TITLE, ID, PARAGRAPH

# USER_TEMPLATE with its two fields as groups ("【章节标题】{chapter_title}\n【段落内容】{paragraph}").
_USER_RE = re.compile(
    "^" + re.escape(USER_TEMPLATE).replace(re.escape("{chapter_title}"), "(?P<title>.*?)")
    .replace(re.escape("{paragraph}"), "(?P<paragraph>.*)") + "$", re.S)

SEED = "seed"
OPENAI_BATCH = "openai-batch"


def row_format(obj: dict[str, Any]) -> str | None:
    """`seed` (a seed-format row: `input` object or a top-level paragraph), `openai-batch`, or None."""
    if "custom_id" in obj and isinstance(obj.get("body"), dict):
        return OPENAI_BATCH
    if isinstance(obj.get("input"), dict) or PARAGRAPH in obj:
        return SEED
    return None


def neither_format(where: str, obj: dict[str, Any]) -> DataError:
    keys = ", ".join(sorted(obj)[:6]) or "none"
    return DataError(
        f"{where}: neither a seed-format row ({{\"input\": {{\"chapter_title\", \"paragraph\"}}}} or a top-level "
        f"paragraph) nor an OpenAI batch request ({{\"custom_id\", \"body\": {{\"messages\"}}}}); its keys: {keys}")


def _text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in (None, "text")]
        texts = [p for p in parts if isinstance(p, str)]
        if texts and len(texts) == len(parts):
            return "".join(texts)
    return None


def split_user_text(text: str) -> tuple[str | None, str]:
    """(chapter_title, paragraph) of a user turn: the two fields of USER_TEMPLATE, else (None, the whole text)."""
    m = _USER_RE.match(text)
    if m:
        return (m.group("title") or None), m.group("paragraph")
    return None, text


def batch_request_columns(row: JsonlRow) -> dict[str, Any]:
    """Shard columns (id, chapter_title, paragraph) of one OpenAI batch request line; DataError naming the line."""
    where = f"{row.file}:{row.line}"
    obj = row.obj
    body = obj.get("body")
    if not isinstance(body, dict):
        raise DataError(f"{where}: an OpenAI batch request needs a body object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "a completions prompt (body.prompt)" if "prompt" in body else "no body.messages"
        raise DataError(f"{where}: {what}; the engine reads chat requests (/v1/chat/completions) with messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise DataError(f"{where}: body.messages has no user message")
    text = _text(users[-1].get("content"))
    if text is None:
        raise DataError(f"{where}: the user message's content is not text")
    custom_id = obj.get("custom_id")
    if custom_id is None or isinstance(custom_id, (dict, list)):
        raise DataError(f"{where}: custom_id must be a string, got {custom_id!r}")
    title, paragraph = split_user_text(text)
    return {ID: str(custom_id), CHAPTER_TITLE: title, PARAGRAPH: paragraph}


def batch_requests_table(rows: Iterable[JsonlRow]) -> pa.Table:
    """Shard columns of OpenAI batch request lines (every line must be one: others are named)."""
    cols: list[dict[str, Any]] = []
    for r in rows:
        if row_format(r.obj) != OPENAI_BATCH:
            raise DataError(f"{r.file}:{r.line}: not an OpenAI batch request like the file's first line "
                            "(custom_id and body); one file holds one format")
        cols.append(batch_request_columns(r))
    return pa.table({ID: pa.array([c[ID] for c in cols], pa.string()),
                     CHAPTER_TITLE: pa.array([c[CHAPTER_TITLE] for c in cols], pa.string()),
                     PARAGRAPH: pa.array([c[PARAGRAPH] for c in cols], pa.string())})


# ---- results out -------------------------------------------------------------------------------------------


def batch_output_lines(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Batch output objects of engine result rows (dicts with id, adapter, raw, status, error, ...)."""
    for r in rows:
        custom_id = r.get(ID)
        adapter = r.get("adapter")
        digest = hashlib.sha256(f"{custom_id}\0{adapter}".encode()).hexdigest()[:24]
        line: dict[str, Any] = {"id": f"rm-{digest}", "custom_id": custom_id}
        if r.get("raw") is None:  # never answered: the reason is all there is
            reason, _, detail = (r.get("error") or "error").partition(": ")
            line["response"] = None
            line["error"] = {"code": reason, "message": detail or reason}
            yield line
            continue
        prompt, output = r.get("prompt_tokens") or 0, r.get("output_tokens") or 0
        line["response"] = {
            "status_code": 200,
            "request_id": f"rm-req-{digest}",
            "body": {
                "id": f"chatcmpl-{digest}", "object": "chat.completion", "model": adapter,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r["raw"]},
                             "finish_reason": r.get("finish_reason") or "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
            },
        }
        line["error"] = None
        yield line


def write_batch_output(results: pa.Table | str | os.PathLike, path: str | os.PathLike) -> int:
    """Result rows (a table, or a results folder / file read with data.io.read_table) as OpenAI batch output
    JSONL at `path` (written whole, then renamed); returns the number of lines."""
    from reportminer.data.io import atomic_path, read_table

    table = results if isinstance(results, pa.Table) else read_table(results)
    cols = [c for c in (ID, "adapter", "raw", "status", "error", "finish_reason", "prompt_tokens", "output_tokens")
            if c in table.column_names]
    n = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for batch in table.select(cols).to_batches(max_chunksize=4096):
            for line in batch_output_lines(batch.to_pylist()):
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                n += 1
    return n


__all__ = ["OPENAI_BATCH", "SEED", "batch_output_lines", "batch_request_columns", "batch_requests_table",
           "neither_format", "row_format", "split_user_text", "write_batch_output"]
