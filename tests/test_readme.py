"""The README's quick start runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs_as_written():
    text = README.read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.S).group(1)
    expected = [m.group(1) for m in re.finditer(r"print\(.*?#.*?(\[.*?\])\s*$", code, re.M)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(code, str(README), "exec"), {})
    assert out.getvalue().split("\n")[:-1] == expected
