"""The HTML report's Chinese (issue 19 item 6) and evidence (item 4): the page embeds the glyphs of every
CJK character it shows, the plots are drawn with the bundled font, and each case shows its paragraph
with the gold and predicted evidence marked. (Checked by eye too: headless Chromium on a machine with no
CJK font, docs/evalkit.md "Report".)"""
from __future__ import annotations

import base64
import io
import re
import warnings
from pathlib import Path

from click.testing import CliRunner
from fontTools.ttLib import TTFont

from reportminer.evalkit.cli import main
from reportminer.evalkit.fonts import BUNDLED, cjk_font
from reportminer.evalkit.report import _plt, highlight


def test_the_page_embeds_a_glyph_for_each_of_its_cjk_characters(demo_jsonl: Path, repo_root: Path, tmp_path: Path):
    preds = repo_root / "evalkit" / "examples" / "demo_batch.json"
    res = CliRunner().invoke(main, ["report", "--gold", str(demo_jsonl), str(preds), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    (b64,) = re.findall(r'@font-face\{font-family:"reportminer CJK";src:url\(data:font/ttf;base64,([A-Za-z0-9+/=]+)\)', page)
    cmap = TTFont(io.BytesIO(base64.b64decode(b64))).getBestCmap()
    cjk = {c for c in re.sub(r"base64,[A-Za-z0-9+/=]+", "", page) if "\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef"}
    assert len(cjk) > 300 and all(ord(c) in cmap for c in cjk)
    assert not any(c < 0x80 for c in cmap)  # Latin text keeps the page's other fonts
    assert page.index('"reportminer CJK"', page.index("body{")) < page.index("system-ui")
    # Each case with its paragraph and evidence: demo-01's gold 归母净利润 with the figure its reason cites.
    assert page.count("<td class=para>") == 12
    assert "<mark class=gp>归母净利润</mark><mark class=g>18.6</mark>" in page  # both named it; gold cites 18.6
    assert 'ungrounded" title="not found in the paragraph">营业收入' in page  # demo-03, a macro paragraph


def test_plots_draw_chinese_with_the_bundled_font():
    assert cjk_font() == BUNDLED and BUNDLED.stat().st_size < 1_100_000
    plt = _plt()
    fig, ax = plt.subplots()
    ax.set_title("单指标 · 财务与业务分类 · 边界:多数字单核心")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for an empty box
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def test_highlight_marks_gold_predicted_and_both():
    text = "归母净利润18.6亿元，毛利率<41%>"
    got = highlight(text, [[0, 5], [12, 15]], [[3, 9]])
    assert got == ("<mark class=g>归母净</mark><mark class=gp>利润</mark><mark class=p>18.6</mark>亿元，"
                   "<mark class=g>毛利率</mark>&lt;41%&gt;")
    assert highlight(None, [[0, 1]], None) == "" and highlight("ab", None, None) == "ab"
