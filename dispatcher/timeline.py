"""The HTML timeline of a :class:`~dispatcher.Trace`: one self-contained file (its
data, script and style inline, nothing fetched from the network) that a browser
opens anywhere.

Policy: the page draws, as SVG made by its own short script, one row per worker
with a bar per attempt (the colour of the bar is its function's; a failed attempt
has a red outline and a cross-hatch; the attempts of the critical path a thick
dark outline), and below it the utilisation curve: attempts running and cores
held over time, against the budget, so that idle cores show as the gap under the
budget line. Hovering a bar shows its node, attempt, worker, times and error. The
summary of the trace heads the page.
"""

from __future__ import annotations

import html
import json

__all__ = ["page", "page_data"]

# 12 colours that stay apart from each other (ColorBrewer's Paired, reordered)
PALETTE = (
    "#1f78b4", "#33a02c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3",
    "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99", "#ffff99", "#8dd3c7",
)  # fmt: skip


def page_data(trace) -> dict:
    """What the page's script draws: lanes, bars (times in seconds from the start of
    the run's span), the utilisation curve and the budget."""
    start, end = trace.span()
    lanes = trace.lanes()
    critical = {id(a) for a in trace.critical_path()}
    colours: dict = {}
    bars = []
    for a in trace.attempts:
        label = a.node.label
        if label not in colours:
            colours[label] = PALETTE[len(colours) % len(PALETTE)]
        bars.append(
            {
                "lane": lanes[trace.lane_of(a)] - 1,
                "label": label,
                "attempt": a.number,
                "ready": a.ready - start,
                "submitted": a.submitted - start,
                "start": a.started - start,
                "end": a.finished - start,
                "error": None if a.error is None else f"{type(a.error).__name__}: {a.error}",
                "critical": id(a) in critical,
                "cores": a.cores,
            }
        )
    return {
        "lanes": list(lanes),
        "bars": bars,
        "colours": colours,
        "curve": trace.curve(),
        "cores": trace.cores,
        "span": end - start,
    }


def page(trace) -> str:
    """The timeline of ``trace``, as the text of an HTML page."""
    data = json.dumps(page_data(trace)).replace("</", "<\\/")  # never ends the script early
    title = f"dispatcher run on {trace.executor}" if trace.executor else "dispatcher run"
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__SUMMARY__", html.escape(trace.summary()))
        .replace("__DATA__", data)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 16px; margin: 0 0 8px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
#tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #888;
       padding: 4px 6px; font-size: 12px; white-space: pre; display: none; }
.legend span { display: inline-block; margin-right: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
svg text { font-size: 11px; }
</style></head>
<body>
<h1>__TITLE__</h1>
<pre id="summary">__SUMMARY__</pre>
<div class="legend" id="legend"></div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg"></svg>
<h1>Utilisation</h1>
<div class="legend"><span><i style="background:#1f78b4"></i>cores held</span>
<span><i style="background:#ff7f00"></i>attempts running</span>
<span><i style="background:#888"></i>the budget of cores (dashed)</span></div>
<svg id="utilisation" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
const data = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
const left = 150, right = 60, row = 22, width = Math.max(600, window.innerWidth - 40);
const span = data.span > 0 ? data.span : 1e-6;
const x = t => left + (width - left - right) * t / span;
function el(parent, name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}
function ms(t) { return (t * 1e3).toFixed(3) + " ms"; }
function axis(svg, y) {
  for (let i = 0; i <= 10; i++) {
    const t = span * i / 10;
    el(svg, "line", {x1: x(t), x2: x(t), y1: 0, y2: y, stroke: "#eee"});
    el(svg, "text", {x: x(t), y: y + 14, "text-anchor": "middle"}, ms(t));
  }
}
const tip = document.getElementById("tip");
const legend = document.getElementById("legend");
for (const label in data.colours) {
  const s = document.createElement("span");
  const i = document.createElement("i");
  i.style.background = data.colours[label];
  s.appendChild(i);
  s.appendChild(document.createTextNode(label));
  legend.appendChild(s);
}
const tl = document.getElementById("timeline");
const height = data.lanes.length * row;
tl.setAttribute("width", width);
tl.setAttribute("height", height + 20);
const defs = el(tl, "defs", {});
const hatch = el(defs, "pattern", {id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse"});
el(hatch, "path", {d: "M0,6 L6,0", stroke: "#d00", "stroke-width": 1.5});
axis(tl, height);
data.lanes.forEach((name, i) => {
  el(tl, "text", {x: 4, y: i * row + 15}, name.length > 22 ? name.slice(0, 21) + "\\u2026" : name);
});
for (const b of data.bars) {
  const y = b.lane * row + 3, w = Math.max(1, x(b.end) - x(b.start));
  const r = el(tl, "rect", {x: x(b.start), y: y, width: w, height: row - 6,
    fill: data.colours[b.label], "class": b.error ? "bar failed" : "bar"});
  if (b.critical) { r.setAttribute("stroke", "#000"); r.setAttribute("stroke-width", 2.5); }
  if (b.error) {
    r.setAttribute("stroke", "#d00"); r.setAttribute("stroke-width", 2);
    el(tl, "rect", {x: x(b.start), y: y, width: w, height: row - 6, fill: "url(#hatch)"});
  }
  const text = b.label + " (attempt " + b.attempt + ")\\nworker: " + data.lanes[b.lane] +
    "\\nready " + ms(b.ready) + ", submitted " + ms(b.submitted) +
    "\\nstarted " + ms(b.start) + ", finished " + ms(b.end) + " (ran " + ms(b.end - b.start) + ")" +
    (b.cores ? "\\ncores: " + b.cores : "") + (b.critical ? "\\non the critical path" : "") +
    (b.error ? "\\nfailed: " + b.error : "");
  r.addEventListener("mousemove", ev => {
    tip.textContent = text; tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  });
  r.addEventListener("mouseleave", () => { tip.style.display = "none"; });
}
const ut = document.getElementById("utilisation");
const uh = 160;
const most = Math.max(1, data.cores || 0, ...data.curve.map(c => Math.max(c[1], c[2])));
const yv = v => uh - uh * v / most;
ut.setAttribute("width", width);
ut.setAttribute("height", uh + 20);
axis(ut, uh);
function steps(index, colour, name) {
  let d = "M" + x(0) + "," + yv(0), last = 0;
  for (const c of data.curve) {
    d += " L" + x(c[0]) + "," + yv(last) + " L" + x(c[0]) + "," + yv(c[index]);
    last = c[index];
  }
  d += " L" + x(span) + "," + yv(last);
  el(ut, "path", {d: d, fill: "none", stroke: colour, "stroke-width": 1.5, "class": name});
}
steps(2, "#1f78b4", "cores");
steps(1, "#ff7f00", "running");
if (data.cores) {
  el(ut, "line", {x1: x(0), x2: x(span), y1: yv(data.cores), y2: yv(data.cores),
                  stroke: "#888", "stroke-dasharray": "4 3"});
  el(ut, "text", {x: 4, y: yv(data.cores) + 4}, data.cores + " cores");
}
})();
</script>
</body></html>
"""
