"""Token ids and loss masks for training, built from the contract's rendering of prompt and answer.

The prompt tokens are exactly the tokens the engine feeds vLLM (data.prompt.render_prompt, thinking off,
tokenised on its own), and the loss covers only the answer and the template's end-of-turn
(data.prompt.render_training_example). The examples reach trl's SFTTrainer already tokenised, as
`input_ids` + `completion_mask` (the tokenised form of a prompt/completion dataset, with
`completion_only_loss=True`), rather than as text: given text, trl appends the tokenizer's EOS to any
completion that does not end with it, and ours ends with the template's "<|im_end|>\\n", so the model
would learn a second end-of-turn that the engine never sees.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from reportminer.data.prompt import render_training_example

from .rows import LabelledRow

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class TokenizedExample:
    source: str
    input_ids: list[int]
    completion_mask: list[int]  # 0 on prompt tokens, 1 on answer + end-of-turn tokens

    @property
    def prompt_len(self) -> int:
        return self.completion_mask.index(1) if 1 in self.completion_mask else len(self.completion_mask)


def encode(tokenizer: Any, text: str) -> list[int]:
    # The rendered chat text already holds every special token the template wants; adding BOS/EOS here
    # would put tokens in training that the served prompt does not have.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_row(tokenizer: Any, row: LabelledRow) -> TokenizedExample:
    tt = render_training_example(tokenizer, row.chapter_title, row.paragraph, row.output)
    prompt_ids = encode(tokenizer, tt.prompt)
    completion_ids = encode(tokenizer, tt.completion)
    if not completion_ids:
        raise ValueError(f"{row.source}: the answer tokenises to nothing")
    return TokenizedExample(
        source=row.source,
        input_ids=prompt_ids + completion_ids,
        completion_mask=[0] * len(prompt_ids) + [1] * len(completion_ids),
    )


@dataclass
class TokenizedSet:
    examples: list[TokenizedExample]
    skipped: list[str]  # "source: N tokens > max_length"

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def answer_tokens(self) -> int:
        return sum(sum(e.completion_mask) for e in self.examples)

    def to_dataset(self):
        """A `datasets.Dataset` with input_ids and completion_mask (trl builds labels from the mask)."""
        from datasets import Dataset

        return Dataset.from_dict(
            {"input_ids": [e.input_ids for e in self.examples], "completion_mask": [e.completion_mask for e in self.examples]}
        )


def tokenize_rows(tokenizer: Any, rows: list[LabelledRow], max_length: int, name: str = "train") -> TokenizedSet:
    """Tokenise every row; rows longer than max_length are left out and listed, never truncated.

    A truncated example keeps the prompt and loses the end of the answer, which teaches the model to
    stop in the middle of a JSON object.
    """
    examples, skipped = [], []
    for row in rows:
        ex = tokenize_row(tokenizer, row)
        if len(ex.input_ids) > max_length:
            skipped.append(f"{row.source}: {len(ex.input_ids)} tokens > max_length {max_length}")
            continue
        examples.append(ex)
    for s in skipped[:20]:
        log.warning("skipped (%s): %s", name, s)
    if len(skipped) > 20:
        log.warning("... and %d more %s rows over max_length", len(skipped) - 20, name)
    return TokenizedSet(examples, skipped)
