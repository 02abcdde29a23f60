"""The one rendering API of guardsmith's reports: tables, images, pages and whole documents.

A report is a :class:`Document`: a title, notes and :class:`Section` s, each with an optional
:class:`Table`, images and notes. :func:`render_markdown` and :func:`render_html` turn the same
document into Markdown (images linked by file name) and a self-contained HTML page (images
embedded as ``data:`` URIs), both from the Jinja2 templates in ``templates/``. HTML templates
autoescape every value; text in backticks becomes ``<code>`` in HTML notes, headings and table cells.

Every report (the evaluation report, the Boundary Guidance report) is built as a :class:`Document`
and rendered by these two functions. The smaller pieces are public too: :func:`markdown_table` (also
used by plain-Markdown reports) and :func:`figure_png`.
"""
from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


@dataclass
class Table:
    """A table of text cells; ``best`` flags cells shown bold, ``left`` = number of left-aligned columns.

    ``groups``: (heading, number of columns) spanning the header from the left, shown as a header
    row above it in HTML (Markdown has one header row: its column names must stand alone).
    """

    header: Sequence[str]
    body: Sequence[Sequence[str]]
    best: Sequence[Sequence[bool]] | None = None
    left: int = 1
    groups: Sequence[tuple[str, int]] | None = None


@dataclass
class Image:
    """A PNG plot: ``file`` is its name next to a Markdown report, ``png`` its bytes (embedded in HTML)."""

    title: str
    file: str
    png: bytes


@dataclass
class Section:
    """A titled part of a report: a table, then images, then notes (each optional)."""

    heading: str
    table: Table | None = None
    images: list[Image] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Document:
    """A whole report: title, notes under the title, then sections."""

    title: str
    sections: list[Section]
    notes: list[str] = field(default_factory=list)


_CODE = re.compile(r"`([^`]+)`")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]],
                   best: Sequence[Sequence[bool]] | None = None, left: int = 1) -> list[str]:
    """Lines of a Markdown table: ``left`` left-aligned columns, the rest right-aligned, best cells bold."""
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    for i, cells in enumerate(body):
        shown = [f"**{c}**" if best and best[i][j] else c for j, c in enumerate(cells)]
        lines.append("| " + " | ".join(map(_md_escape, shown)) + " |")
    return lines


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2
    from markupsafe import Markup, escape

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("guardsmith.reporting", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"], default=False),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    env.filters["md_table"] = lambda t: "\n".join(markdown_table(t.header, t.body, t.best, t.left))
    env.filters["inline"] = lambda text: Markup(_CODE.sub(r"<code>\1</code>", str(escape(text))))
    return env


def render_markdown(doc: Document) -> str:
    """The Markdown form of ``doc``; images are linked by their file names."""
    return _environment().get_template("document.md.j2").render(doc=doc).rstrip("\n") + "\n"


def render_html(doc: Document) -> str:
    """The self-contained HTML form of ``doc``; images are embedded."""
    return _environment().get_template("document.html.j2").render(title=doc.title, doc=doc)


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()
