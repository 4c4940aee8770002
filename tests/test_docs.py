"""The documentation: its examples run and print what they say, the site builds
with warnings as errors, and the API reference names every public name."""

from __future__ import annotations

import configparser
import os
import pathlib
import re
import subprocess
import sys

import pytest

import dispatcher as dp

from . import docexamples

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INTEROP_PAGE = DOCS / "interop.md"  # its examples need other tools: tests/interop runs them
PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.glob("*.md") if p != INTEROP_PAGE)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_of_the_page_run_as_written(page):
    failures, _ = docexamples.check_page(page)
    assert not failures, "\n\n".join(failures)


def test_every_page_with_code_has_examples_that_run():
    """A page whose python blocks were all skipped would test nothing."""
    for page in PAGES:
        found = docexamples.blocks(page)
        if found:
            assert any(not b.skipped for b in found), f"{page.name}: every example is skipped"


def test_the_examples_are_checked(tmp_path):
    """The runner fails a page whose output differs, whose code raises, whose
    standalone block fails, and reports the page's line."""
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nx = 2\nprint(x * 21)\n```\n\n```output\n41\n```\n\n"
        "Text.\n\n```python\nprint('same' if x == 2 else 'lost')\n```\n\n```output\nsame\n```\n\n"
        "% doc-test: run python\n```python\nprint('alone' if 'x' not in globals() else 'shared')\n"
        "raise SystemExit(3)\n```\n\n"
        "```python\n1 / 0\n```\n"
    )
    failures, ran = docexamples.check_page(page)
    assert ran == 4
    assert len(failures) == 3, failures
    assert failures[0].startswith(f"{page}:4: the block printed\n42\n")
    assert failures[1].startswith(f"{page}:29: the block raised\n")
    assert f'File "{page}", line 29' in failures[1]
    assert "ZeroDivisionError" in failures[1]
    assert failures[2].startswith(f"{page}:24: `python` ended with 3")


def test_output_is_compared_as_doctest_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint('pid', 12345, '   spaced')\n```\n\n```output\npid ... spaced\n```\n")
    assert docexamples.check_page(page) == ([], 1)


def test_skip_needs_a_reason_and_output_needs_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("% doc-test: skip\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="needs an argument"):
        docexamples.blocks(page)
    page.write_text("```sh\nls\n```\n\n```output\nfile\n```\n")
    with pytest.raises(ValueError, match="must follow a python block"):
        docexamples.blocks(page)


def test_named_blocks_are_files_for_their_own_tests(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "% doc-test: file job.sh\n```sh\n#SBATCH -n 2\nsrun hostname\n```\n\n"
        "% doc-test: file script.py\n% doc-test: run python\n```python\nprint(1)\n```\n\n"
        "% doc-test: file alone.py\n```python\nraise SystemExit(1)\n```\n"
    )
    assert docexamples.files(page) == {
        "job.sh": "#SBATCH -n 2\nsrun hostname\n",
        "script.py": "print(1)\n",
        "alone.py": "raise SystemExit(1)\n",
    }
    assert [(b.name, b.skipped) for b in docexamples.blocks(page)] == [
        ("script.py", False),
        ("alone.py", True),
    ]
    assert docexamples.check_page(page) == ([], 1)  # the named block without a run line is not run here


def test_api_reference_names_every_public_name():
    text = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^\.\. auto(?!module)\w+:: dispatcher\.(\w+)$", text, re.M))
    assert set(dp.__all__) - documented == set()
    assert documented - set(dp.__all__) == set()


def test_every_public_name_has_a_docstring():
    missing = [name for name in dp.__all__ if not (getattr(dp, name).__doc__ or "").strip()]
    assert missing == []


def test_every_page_is_in_the_site():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w-]+)$", index, re.M))
    assert {p.stem for p in DOCS.glob("*.md")} - {"index"} <= listed


@pytest.mark.timeout(300)
def test_the_site_builds_without_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    api = (tmp_path / "api.html").read_text()
    for name in dp.__all__:
        assert f'id="dispatcher.{name}"' in api, name
    assert (tmp_path / "benchmarks.png").exists() or (tmp_path / "_images" / "benchmarks.png").exists()


def test_install_hints_name_the_distribution():
    """PyPI's `dispatcher` is another project: every hint names `dispatcher-graph`."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["name"] == "dispatcher-graph"
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "dispatcher").rglob("*.py")]
    hints = []
    for path in texts:
        for line in path.read_text().splitlines():
            hints += re.findall(r"pip install '?([\w.-]+)\[", line)
    assert hints, "no install hint found"
    assert set(hints) <= {"dispatcher-graph", "."}, sorted(set(hints))
    assert "dispatcher-graph" in hints
