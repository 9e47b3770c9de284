"""The run's progress bar: output rows, rows/s and output tokens/s (vLLM's own per-call bar stays off)."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        # In a cron log a bar redrawn ten times a second is noise: redraw every 30 s there.
        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=total, unit="row", desc="engine", disable=not enabled, dynamic_ncols=True,
            mininterval=0.5 if tty else 30.0, file=sys.stderr, smoothing=0.05,
        )
        self.t0 = time.perf_counter()
        self.output_tokens = 0

    def update(self, rows: int, output_tokens: int = 0) -> None:
        self.output_tokens += output_tokens
        self.bar.update(rows)
        if self.bar.n % 16 == 0 or rows > 1:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.output_tokens / dt:.1f} tok/s", refresh=False)

    def shrink(self, rows: int) -> None:
        """A failed shard's unprocessed rows leave the total."""
        self.bar.total = max(self.bar.n, (self.bar.total or 0) - rows)
        self.bar.refresh()

    def set_description(self, text: str) -> None:
        self.bar.set_description_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()
