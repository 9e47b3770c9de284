#!/usr/bin/env python
"""Build evalkit/fonts/cjk-sans.ttf, the CJK font the HTML report embeds (a subset of the page's own
characters) and draws its plots with, so that Chinese never shows as empty boxes where the server or the
reader has no CJK font (issue 19 item 6).

Source: Droid Sans Fallback Full (Apache License 2.0; Debian's fonts-droid-fallback,
/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf, 28,601 characters). Kept: GB2312 (6,763
hanzi and its symbols), printable ASCII, CJK punctuation (U+3000-303F), full-width forms (U+FF00-FFEF)
and a few marks research notes use (‰ ℃ · — … ‘’ “”): 7,181 characters, 1.0 MB, without hinting or layout
features (the report sets plain text). Same input, same bytes.

    apt-get download fonts-droid-fallback && dpkg -x fonts-droid-fallback_*.deb /tmp/droid
    .venv/bin/python scripts/make_cjk_font.py /tmp/droid/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

OUT = Path(__file__).resolve().parents[1] / "evalkit" / "fonts" / "cjk-sans.ttf"
EXTRA = "‰℃·—…‘’“”•→←↑↓±×÷≤≥≈％"


def characters() -> set[str]:
    chars = set()
    for b1 in range(0xA1, 0xF8):
        for b2 in range(0xA1, 0xFF):
            try:
                chars.add(bytes([b1, b2]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    chars |= {chr(c) for c in range(0x20, 0x7F)} | {chr(c) for c in range(0x3000, 0x3040)}
    chars |= {chr(c) for c in range(0xFF00, 0xFFF0)} | set(EXTRA)
    return chars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="DroidSansFallbackFull.ttf")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    opts = subset.Options()
    opts.layout_features = []
    opts.hinting = False
    opts.notdef_outline = True
    opts.name_IDs = ["*"]
    font = TTFont(args.source, recalcTimestamp=False)
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=sorted(ord(c) for c in characters()))
    sub.subset(font)
    # Reproducible bytes: the source's timestamps kept (recalcTimestamp=False), none from this run.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    font.save(args.out)
    data = args.out.read_bytes()
    print(f"{args.out}: {len(font.getBestCmap())} characters, {len(data) / 1e6:.2f} MB, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
