"""The code examples of the Markdown docs, run as their reader would run them.

A page's ```` ```python ```` blocks run in order, in one fresh interpreter, as one
script would: they share their globals, which are those of ``__main__``. A block
directly followed by an ```` ```output ```` block must print that output
(compared as doctest compares, with ``...`` matching anything and runs of
whitespace equal). A comment line just before a block changes how it runs:

- ``% doc-test: run COMMAND`` (or ``<!-- doc-test: run COMMAND -->`` in the
  README, which GitHub renders) runs the block alone, as a script file appended to
  ``COMMAND`` (for instance ``mpiexec -n 4 python``), or put where ``COMMAND``
  says ``{}`` (``python {} --executor serial``); several such lines run it once
  for each. ``python`` and ``mpiexec`` are those of the test environment.
- ``% doc-test: skip REASON`` leaves the block out (it needs a remote scheduler);
  the reason is required.
- ``% doc-test: file NAME`` names the block (of any language: a batch script, a
  script) as the file ``NAME`` that a test of its own writes and runs where it can
  (``tests/slurm`` submits the Slurm pages' batch scripts to a real cluster):
  :func:`files` gives them. Such a block runs here only if it also has ``run``
  lines.

``python tests/docexamples.py PAGE RESULT.json`` is the runner of a page's shared
blocks; :func:`check_page` starts it, runs the standalone blocks, and returns the
failures, each naming the page and the line of its block.
"""

from __future__ import annotations

import doctest
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
DIRECTIVE = re.compile(
    r"^\s*(?:%|<!--)\s*doc-test:\s*(?P<kind>run|skip|file)\b\s*(?P<arg>.*?)\s*(?:-->)?\s*$"
)
CHECKER = doctest.OutputChecker()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class Block:
    """One python block of a page: its text, first line, directives, expected output."""

    def __init__(self, code: str, line: int, directives: list[tuple[str, str]]):
        self.code = code
        self.line = line  # the line of the block's first line of code, counted from 1
        self.directives = directives
        self.output: str | None = None

    @property
    def runs(self) -> list[str]:
        return [arg for kind, arg in self.directives if kind == "run"]

    @property
    def skipped(self) -> bool:
        if any(kind == "skip" for kind, _ in self.directives):
            return True
        return self.name is not None and not self.runs  # a file that a test of its own runs

    @property
    def name(self) -> str | None:
        return next((arg for kind, arg in self.directives if kind == "file"), None)


def _fenced(path: pathlib.Path, lines: list[str]):
    """Each fenced block of a page: ``(line of its fence, language, code, the line
    after it)``, lines counted from 0; the text between blocks is not given."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        body, j = [], i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: a code block is not closed")
        yield i, (info.split()[0] if info else ""), "\n".join(body) + "\n", j + 1
        i = j + 1


def blocks(path: pathlib.Path) -> list[Block]:
    """The page's python blocks, each with the output block that follows it, if any."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    after_python = None  # the line after the python block just seen, while nothing else came
    for i, lang, code, after in _fenced(path, lines):
        follows_python = after_python is not None and not any(line.strip() for line in lines[after_python:i])
        after_python = None
        if lang == "python":
            found.append(Block(code, i + 2, _directives(path, lines, i)))
            after_python = after
        elif lang == "output":
            if not follows_python:
                raise ValueError(f"{path}:{i + 1}: an output block must follow a python block")
            found[-1].output = code
    return found


def _directives(path, lines: list[str], fence: int) -> list[tuple[str, str]]:
    """The ``doc-test`` lines just above the block that opens at line ``fence``."""
    directives = []
    k = fence - 1
    while k >= 0 and (d := DIRECTIVE.match(lines[k])):
        if d["kind"] in ("skip", "file") and not d["arg"]:
            raise ValueError(f"{path}:{k + 1}: 'doc-test: {d['kind']}' needs an argument")
        directives.insert(0, (d["kind"], d["arg"]))
        k -= 1
    return directives


def files(path: pathlib.Path) -> dict[str, str]:
    """The page's blocks named by ``% doc-test: file NAME``, of any language: ``{NAME: text}``."""
    lines = path.read_text().splitlines()
    named: dict[str, str] = {}
    for i, _, code, _ in _fenced(path, lines):
        name = next((arg for kind, arg in _directives(path, lines, i) if kind == "file"), None)
        if name is None:
            continue
        if name in named:
            raise ValueError(f"{path}:{i + 1}: a second block is named {name!r}")
        named[name] = code
    return named


def _environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _compare(path, block: Block, out: str, failures: list[str], how: str = "") -> None:
    if block.output is not None and not CHECKER.check_output(block.output, out, FLAGS):
        failures.append(f"{path}:{block.line}: the block{how} printed\n{out}\ninstead of\n{block.output}")


def check_page(path: pathlib.Path, timeout: float = 240) -> tuple[list[str], int]:
    """Run the page's examples; return the failures and how many blocks ran."""
    page_blocks = [b for b in blocks(path) if not b.skipped]
    shared = [b for b in page_blocks if not b.runs]
    failures: list[str] = []
    env = _environment()
    with tempfile.TemporaryDirectory() as tmp:
        if shared:
            result = pathlib.Path(tmp) / "result.json"
            proc = subprocess.run(
                [sys.executable, __file__, str(path), str(result)],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if not result.exists():
                return [f"{path}: the examples' runner ended with {proc.returncode}\n{proc.stderr}"], 0
            outcomes = json.loads(result.read_text())
            for block, outcome in zip(shared, outcomes):
                if outcome["error"]:
                    failures.append(f"{path}:{block.line}: the block raised\n{outcome['error']}")
                    break
                _compare(path, block, outcome["stdout"], failures)
            if len(outcomes) < len(shared) and not failures:
                failures.append(f"{path}: the runner stopped early\n{proc.stderr}")
        for block in (b for b in page_blocks if b.runs):
            script = pathlib.Path(tmp) / f"example_{block.line}.py"
            script.write_text(block.code)
            for command in block.runs:
                try:
                    words = command.split()
                    argv = [str(script) if w == "{}" else w for w in words]
                    if "{}" not in words:
                        argv.append(str(script))
                    proc = subprocess.run(
                        argv,
                        cwd=tmp,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                    )
                except subprocess.TimeoutExpired:
                    failures.append(f"{path}:{block.line}: `{command}` did not end in {timeout} s")
                    continue
                if proc.returncode != 0:
                    failures.append(
                        f"{path}:{block.line}: `{command}` ended with {proc.returncode}\n{proc.stderr}"
                    )
                    continue
                _compare(path, block, proc.stdout, failures, f" run by `{command}`")
    return failures, len(page_blocks)


def _run_shared(path: pathlib.Path, result: pathlib.Path) -> None:
    """In a fresh interpreter: run the page's shared blocks in ``__main__``, in order."""
    import contextlib
    import io
    import traceback

    main = sys.modules["__main__"].__dict__
    dumps, write = json.dumps, result.write_text  # the examples may take these names
    outcomes = []
    for block in blocks(path):
        if block.skipped or block.runs:
            continue
        # pad with blank lines, so that tracebacks give the line of the page
        code = compile("\n" * (block.line - 1) + block.code, str(path), "exec", dont_inherit=True)
        out = io.StringIO()
        error = None
        try:
            with contextlib.redirect_stdout(out):
                exec(code, main)
        except BaseException:
            error = traceback.format_exc()
        outcomes.append({"stdout": out.getvalue(), "error": error})
        if error:
            break
    write(dumps(outcomes))


if __name__ == "__main__":
    _run_shared(pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2]))
