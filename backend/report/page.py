"""The one-page ``results/report.html``: self-contained (every image a base64 PNG ``data:`` URI),
so it opens in any browser, from any folder, mailed or copied, with no file beside it."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from .record import JobRecord

STATUS_COLOURS = {"finished": "#2e7d32", "failed": "#c62828", "cancelled": "#ef6c00", "incomplete": "#616161"}


@dataclass
class Figure:
    """One embedded image and its caption."""

    png: bytes
    caption: str = ""


@dataclass
class ReportContent:
    """What the page shows, each part optional: an empty part is left out with a note."""

    record: JobRecord
    losses_png: bytes | None = None
    """The loss curves (``curves.plot_losses``)."""
    comparison: list[tuple[str, list[Figure]]] = field(default_factory=list)
    """Rows of the before/after comparison: (row label, one figure per camera)."""
    comparison_note: str = ""
    """Where the comparison's images come from."""
    filmstrip: list[tuple[str, list[Figure]]] = field(default_factory=list)
    """Stage -> its previews over time, captioned with their step."""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.status { display: inline-block; color: white; padding: 2px 10px; border-radius: 10px; font-size: 13px; }
.meta { color: #555; font-size: 14px; } .note { color: #777; font-size: 13px; }
table { border-collapse: collapse; font-size: 14px; }
td, th { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-family: ui-monospace, monospace; }
.row { display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-start; margin: 6px 0; }
.row .label { width: 120px; font-size: 13px; color: #444; padding-top: 4px; }
figure { margin: 0; text-align: center; } figcaption { font-size: 12px; color: #555; }
img { image-rendering: pixelated; border: 1px solid #eee; }
.problems { color: #8a4b00; font-size: 13px; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(fig: Figure, css_width: int | None = None) -> str:
    width = f' width="{css_width}"' if css_width else ""
    caption = f"<figcaption>{html.escape(fig.caption)}</figcaption>" if fig.caption else ""
    return f'<figure><img src="{data_uri(fig.png)}" alt="{html.escape(fig.caption)}"{width}>{caption}</figure>'


def _rows(rows: list[tuple[str, list[Figure]]], css_width: int) -> str:
    out = []
    for label, figures in rows:
        cells = "".join(_img(f, css_width) for f in figures)
        out.append(f'<div class="row"><div class="label">{html.escape(label)}</div>{cells}</div>')
    return "\n".join(out)


def render_page(content: ReportContent) -> str:
    """The report's HTML text."""
    r = content.record
    colour = STATUS_COLOURS.get(r.status, "#616161")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>PIVA report: {html.escape(r.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(r.title)}</h1>",
        f'<p><span class="status" style="background:{colour}">{html.escape(r.status)}</span> '
        f'<span class="meta">job {html.escape(r.job_id)} &middot; method {html.escape(r.method or "?")} &middot; '
        f'seed {r.seed} &middot; stages {html.escape(", ".join(r.stages) or "?")}</span></p>',
    ]
    if r.message:
        parts.append(f'<p class="meta">{html.escape(r.message)}</p>')
    if r.problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in r.problems)
        parts.append(f'<ul class="problems">{items}</ul>')

    parts.append("<h2>Before and after</h2>")
    if content.comparison:
        parts.append(_rows(content.comparison, 160))
        if content.comparison_note:
            parts.append(f'<p class="note">{html.escape(content.comparison_note)}</p>')
    else:
        parts.append('<p class="note">No views to compare: the job made no preview and no held-out render.</p>')

    parts.append("<h2>Metrics</h2>")
    if r.metrics:
        rows = "".join(
            f'<tr><td>{html.escape(k)}</td><td class="num">{v:.6g}</td></tr>' for k, v in sorted(r.metrics.items())
        )
        parts.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
    else:
        parts.append('<p class="note">No metrics: the job wrote no results manifest (it did not finish).</p>')

    parts.append("<h2>Loss curves</h2>")
    if content.losses_png:
        parts.append(_img(Figure(content.losses_png, "from the progress events of events.jsonl")))
    else:
        parts.append('<p class="note">No stage reported a loss.</p>')

    parts.append("<h2>Previews over time</h2>")
    if content.filmstrip:
        parts.append(_rows(content.filmstrip, 112))
    else:
        parts.append('<p class="note">No preview was rendered.</p>')
    parts.append(f'<p class="note">Job folder: {html.escape(str(r.job_dir))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
