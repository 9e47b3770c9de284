"""The import rule between the rooms (scripts/check_imports.py): the repository keeps it, and the check
catches each kind of violation in a hand-made tree."""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_imports.py"


def _script():
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_repository_keeps_the_rule(repo_root: Path, capsys):
    ci = _script()
    problems, n = ci.check(repo_root)
    assert problems == [], "\n".join(problems)
    assert n > 50  # the rooms, scripts and tests were all read
    assert ci.main([str(repo_root)]) == 0
    assert "import check:" in capsys.readouterr().out


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_each_kind_of_violation_is_named_by_file_and_line(tmp_path: Path, capsys):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "data/__init__.py": "from .schema import ID\n",
        "data/schema.py": "ID = 'id'\nfrom reportminer.engine.rows import RowResult\n",
        "data/models/demo.py": "from ..io import file_sha256\n",  # data -> data: fine
        "engine/__init__.py": "",
        "engine/ok.py": (
            "from reportminer.data import schema\nfrom ..data.io import read_table\nfrom .rows import RowResult\n"
            "import reportminer\nfrom reportminer import __version__\n"
        ),
        "engine/bad.py": "\n\nfrom ..trainer import train\n",
        "trainer/cli.py": "def f():\n    from reportminer import evalkit\n",
        "evalkit/cli.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import reportminer.engine.config\n"
            "import importlib\nm = importlib.import_module('reportminer.trainer.cli')\n"
        ),
        "evalkit/up.py": "from .... import x\n",
        "scripts/tool.py": "from reportminer.engine import extract\nfrom reportminer.evalkit import score\nimport data\n",
        "tests/test_x.py": "from engine import extract\nimport trainer.cli\nimport evalkit\n",
    })
    ci = _script()
    problems, _ = ci.check(root)
    where = sorted(p.split(": ", 1)[0] for p in problems)
    assert where == sorted([
        "data/schema.py:2",
        "engine/bad.py:3",
        "trainer/cli.py:2",
        "evalkit/cli.py:3",
        "evalkit/cli.py:5",
        "evalkit/up.py:1",
        "scripts/tool.py:3",
        "tests/test_x.py:1",
        "tests/test_x.py:2",
        "tests/test_x.py:3",
    ]), "\n".join(problems)
    text = "\n".join(problems)
    assert "data/ (the contract) imports no room; found reportminer.engine" in text
    assert "engine/ imports only reportminer.data, never reportminer.trainer" in text
    assert "relative import outside the reportminer package" in text
    assert "bare top-level name `data`; the room is `reportminer.data`" in text
    assert ci.main([str(root)]) == 1
    out = capsys.readouterr()
    assert "engine/bad.py:3:" in out.out and "10 violation(s)" in out.err


def test_an_import_loop_is_named_even_through_lazy_and_type_checking_imports(tmp_path: Path):
    ci = _script()
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "engine/__init__.py": "",
        "engine/a.py": "from .b import B\nA = 1\n",
        "engine/b.py": "def f():\n    from .c import C\nB = 2\n",
        "engine/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reportminer.engine.a import A\nC = 3\n",
        "engine/d.py": "from .a import A\n",  # imports into the loop, is not part of it
    })
    assert ci.import_cycles(root) == [["reportminer.engine.a", "reportminer.engine.b", "reportminer.engine.c"]]
    problems, _ = ci.check(root)
    assert problems == ["import loop: reportminer.engine.a -> reportminer.engine.b -> reportminer.engine.c (each "
                        "imports another of them; move what they share into a module below them)"]
    (root / "engine/c.py").write_text("C = 3\n")
    assert ci.import_cycles(root) == []
