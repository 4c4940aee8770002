"""Sphinx configuration: ``make docs`` builds the HTML into docs/_build/html."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dispatcher  # noqa: E402

project = "dispatcher"
author = "the dispatcher developers"
copyright = "2026, the dispatcher developers"
release = dispatcher.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

napoleon_google_docstring = True
napoleon_numpy_docstring = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The docstrings say `name` for code; render it as code rather than as a citation.
default_role = "code"

html_theme = "furo"
html_title = f"dispatcher {release}"
html_static_path: list[str] = []
