"""The prompt, defined once: the trainer trains on exactly the text the engine serves.

Train/serve skew (a different system text, a stray space, thinking left on) silently costs accuracy, so
both sides call `render_prompt`, and the training target is the served prompt plus the answer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from .schema import MAX_METRICS, Extraction, to_json

PROMPT_VERSION = "3"

# Version 2: the rules alone, no worked example. Version 1 ended with an example answering exactly two
# metrics; the adapter trained on it answered three metrics where one was labelled (hidden benchmark:
# predicted/gold 1.64, single-metric paragraphs 4/10), and the same recipe with the example removed passed
# 40 % instead of 30 % there (single-metric 9/10). An example in the system text is a count anchor the
# LoRA copies; the labels teach the format anyway. Also 2.3x shorter (about 260 tokens instead of 600 for
# Qwen's tokenizer), which every served row pays for in prefill.
# Version 3: rule 3 names the statement-derived families the v2 adapters typed `business` although the
# seed labels them `financial` (bank asset quality 24:3, leverage 10:0, cash flow 11:0, turnover 13:1,
# expense ratios 26:0 in the 700 rows): 13 of the 1.5B adapter's 16 type errors on the dev benchmark
# (docs/RESULTS.md, round 2). Unit costs stay unnamed: the seed labels them both ways (24 business, 22
# financial). 369 system tokens instead of 296 (Qwen2.5 tokenizer).
SYSTEM_PROMPT = f"""你是卖方研究报告的指标抽取助手。给定研报的章节标题和一个段落，找出该段落深入分析的核心指标。

规则：
1. 核心指标是段落围绕其展开论证的对象：给出数值并解释其变化、原因或影响。只作为背景、原因、子项拆分、行业或宏观数据、历史参照、规模铺垫出现的数字不是核心指标。数字多不等于核心指标多。
2. 每段 0 到 {MAX_METRICS} 个核心指标，只列段落真正深入分析的；纯背景或定性描述的段落 metrics 为空列表。
3. metric_type：来自财务报表或由报表数据计算的指标为 financial，包括收入、利润及其增速，毛利率、净利率、费用率，ROE、资产负债率、净负债率、融资成本，经营性现金流，存货或应收账款周转天数，银行的净息差、不良贷款率、拨备覆盖率、资本充足率，保险的新业务价值率、综合成本率，股息率等；经营、运营、市场类指标（出货量、销量、用户数、客户数、市占率、渗透率、产能利用率、单价、复购率等）为 business。
4. score 为 0 到 1 的置信度；metric_name 用段落中的简洁指标名，不带数值；reason 一句话说明为何是核心指标。
5. analysis 先说明段落的分析主线，再逐一说明被排除的数字及原因。

只输出一个 JSON 对象：{{"analysis": str, "metrics": [{{"metric_name": str, "metric_type": "financial"|"business", "score": float, "reason": str}}]}}"""

USER_TEMPLATE = "【章节标题】{chapter_title}\n【段落内容】{paragraph}"


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def prompt_fingerprint() -> str:
    """Short hash of system text and user template, recorded in manifests to refuse skewed adapters."""
    blob = (SYSTEM_PROMPT + "\x00" + USER_TEMPLATE).encode()
    return f"v{PROMPT_VERSION}-{hashlib.sha256(blob).hexdigest()[:12]}"


def user_text(chapter_title: str | None, paragraph: str | None) -> str:
    return USER_TEMPLATE.format(chapter_title=(chapter_title or "").strip(), paragraph=(paragraph or "").strip())


def build_messages(chapter_title: str | None, paragraph: str | None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_text(chapter_title, paragraph)},
    ]


# Inserted after the first character of a control-token string found in report text, so the tokenizer
# reads it as plain text. A word joiner: invisible, no meaning, and not part of any Qwen control token.
_JOINER = "\u2060"


def plain_text(tokenizer: ChatTokenizer, text: str | None) -> str | None:
    """`text` with every control-token string of `tokenizer` (`<|im_end|>`, `<|im_start|>`, `<think>`, ...)
    broken by a word joiner, so report text can never become chat control tokens.

    Without it a paragraph holding `<|im_end|><|im_start|>system ...` became real control tokens in the
    rendered prompt: a forged system turn (issue 9 measured 5 `<|im_start|>` tokens instead of 3). The
    engine and the trainer both render through `render_prompt`, so both see the same defanged text.
    """
    if not text:
        return text
    added = getattr(tokenizer, "get_added_vocab", None)
    specials = [t for t in (added() if added else {}) if len(t) > 1 and t in text]
    for tok in sorted(specials, key=len, reverse=True):  # longest first: `<|im_end|>` before a prefix of it
        text = text.replace(tok, tok[0] + _JOINER + tok[1:])
    return text


def _apply(tokenizer: ChatTokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    # enable_thinking=False is read by Qwen3's template (it writes an empty think block) and ignored by
    # templates without thinking, e.g. Qwen2.5's.
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
    )


def render_prompt(tokenizer: ChatTokenizer, chapter_title: str | None, paragraph: str | None) -> str:
    """The exact text the engine feeds vLLM for one paragraph (report text made plain: see plain_text)."""
    return _apply(tokenizer, build_messages(plain_text(tokenizer, chapter_title), plain_text(tokenizer, paragraph)),
                  add_generation_prompt=True)


@dataclass(frozen=True)
class TrainingText:
    """`prompt` is byte-identical to `render_prompt`; loss belongs on `completion` alone."""

    prompt: str
    completion: str

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def render_training_example(
    tokenizer: ChatTokenizer,
    chapter_title: str | None,
    paragraph: str | None,
    output: Extraction | dict[str, Any],
) -> TrainingText:
    """Served prompt + canonical answer + the template's end-of-turn text.

    The end-of-turn text is read off the template (render the conversation with the answer and take what
    follows it) instead of being hard-coded, so a model whose template ends turns differently still
    learns to stop where the engine expects it to.
    """
    # Labels are report text too: a control-token string in an analysis or reason is made plain as well.
    answer = plain_text(tokenizer, to_json(output)) or ""
    prompt = render_prompt(tokenizer, chapter_title, paragraph)
    full = _apply(
        tokenizer,
        build_messages(plain_text(tokenizer, chapter_title), plain_text(tokenizer, paragraph))
        + [{"role": "assistant", "content": answer}],
        add_generation_prompt=False,
    )
    at = full.rfind(answer)
    if at < 0:
        raise ValueError("chat template does not reproduce the assistant answer verbatim")
    end_of_turn = full[at + len(answer) :]
    return TrainingText(prompt=prompt, completion=answer + end_of_turn)
