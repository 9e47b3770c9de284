"""A CJK font for the HTML report: Chinese must never show as empty boxes, whether the page is rendered
on a server without CJK fonts (plots, headless screenshots) or read on a machine without them.

The font is `fonts/cjk-sans.ttf` (Droid Sans Fallback, Apache-2.0, subset to GB2312 and the symbols
research notes use: `fonts/README.md`, `scripts/make_cjk_font.py`), or the file `REPORTMINER_CJK_FONT`
names. matplotlib draws the plots with it; the page embeds, as base64 in an @font-face rule, a subset of
just the characters the page uses (fontTools, matplotlib's own dependency: the 12-case demo page adds
~40 KB). The embedded subset holds no ASCII, so it is listed first: Latin text still takes the next fonts.
(Listed after `system-ui`, headless Chromium drew the first CJK runs of a page as empty boxes.)
"""
from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "fonts" / "cjk-sans.ttf"
FAMILY = "reportminer CJK"


def cjk_font() -> Path | None:
    """The font to use: REPORTMINER_CJK_FONT when it names a file, else the bundled one (None if absent)."""
    env = os.environ.get("REPORTMINER_CJK_FONT")
    if env and Path(env).is_file():
        return Path(env)
    return BUNDLED if BUNDLED.is_file() else None


@functools.cache
def matplotlib_family() -> str | None:
    """Register the font with matplotlib once; its family name (None without a font)."""
    path = cjk_font()
    if path is None:
        return None
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def font_face(text: str) -> str:
    """An @font-face rule (family FAMILY) embedding the glyphs of the characters of `text` beyond ASCII
    that the font has; "" when there is none."""
    path = cjk_font()
    chars = {c for c in text if ord(c) > 0x7F}
    if path is None or not chars:
        return ""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(path, recalcTimestamp=False, fontNumber=0)
    have = font.getBestCmap()
    wanted = sorted(ord(c) for c in chars if ord(c) in have)
    if not wanted:
        return ""
    opts = subset.Options()
    opts.layout_features = []
    opts.hinting = False
    opts.notdef_outline = True
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=wanted)
    sub.subset(font)
    buf = io.BytesIO()
    font.save(buf)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'@font-face{{font-family:"{FAMILY}";src:url(data:font/ttf;base64,{data}) format("truetype")}}'
