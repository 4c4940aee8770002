"""A picture of a graph, drawn by Graphviz's ``dot`` through the ``graphviz``
package (the ``graphviz`` extra: ``pip install 'dispatcher-graph[graphviz]'``).

Policy: each node is a box labelled with its function (its label) and a short
view of its arguments, coloured by the state of its latest run: done (green),
failed (red, with its error under the label), cached (blue: done without an attempt
in the :class:`~dispatcher.Trace` given, that is found in the run's store or
given as an input), released (pale green), not run (grey). Edges go from a dependency to the
nodes that take it. The format is the file's suffix (``.svg``, ``.png``,
``.pdf``, ... anything ``dot -T`` writes). A missing package or a missing ``dot``
raises an error that names what to install.
"""

from __future__ import annotations

import os
import pathlib

from .results import DispatcherError

__all__ = ["STATE_COLOURS", "draw"]

STATE_COLOURS = {
    "done": "#b2df8a",
    "failed": "#fb9a99",
    "cached": "#a6cee3",
    "released": "#e5f5e0",
    "not run": "#eeeeee",
}

_INSTALL_DOT = (
    "Graphviz's `dot` program is not installed: install Graphviz (Debian: apt-get install graphviz; "
    "conda: conda install graphviz; macOS: brew install graphviz)"
)


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise DispatcherError(
            "drawing a graph needs the graphviz package: pip install 'dispatcher-graph[graphviz]' "
            "(or pip install graphviz), and Graphviz's dot program"
        ) from None
    return graphviz


def draw(graph, path: str | os.PathLike, trace=None) -> pathlib.Path:
    """Draw ``graph`` to ``path`` (see the module docstring); returns the path."""
    graphviz = _graphviz()
    path = pathlib.Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"give the picture a file suffix for its format (.svg, .png, ...): {str(path)!r}")
    ran = {id(a.node) for a in trace.attempts} if trace is not None else None
    dot = graphviz.Digraph("dispatch", graph_attr={"rankdir": "TB"})
    dot.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11")
    ids = {}
    for i, node in enumerate(graph):
        ids[node] = f"n{i}"
        state = node.state()
        if state == "done" and ran is not None and id(node) not in ran:
            state = "cached"
        call = node._call_text().removeprefix(": ")  # the function and a short view of the arguments
        label = call if call.startswith(node.label) else f"{node.label}\n{call}" if call else node.label
        if len(label) > 60:
            label = label[:57] + "..."
        tooltip = f"{node.label}: {state}"
        if state == "failed":
            error = _error_text(node)
            label += "\n" + (error if len(error) <= 60 else error[:57] + "...")
            tooltip += f"\n{error}"
        dot.node(ids[node], label=label, fillcolor=STATE_COLOURS[state], tooltip=tooltip, id=f"node{i}")
    for parent, child in graph.edges():
        dot.edge(ids[parent], ids[child])
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DispatcherError(_INSTALL_DOT) from None
    except graphviz.CalledProcessError as exc:
        raise DispatcherError(
            f"dot could not draw {str(path)!r}: {exc.stderr.decode(errors='replace')}"
        ) from None
    path.write_bytes(data)
    return path


def _error_text(node) -> str:
    try:
        node.fetch()
    except DispatcherError as err:
        cause = getattr(err, "error", err)
        return f"{type(cause).__name__}: {cause}"
    return ""
