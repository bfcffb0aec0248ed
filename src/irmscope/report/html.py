"""A single self-contained HTML page: sections of text, tables and embedded PNG plots."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from irmscope.io import atomic_write

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{padding:.3em .7em;text-align:left;
border-bottom:1px solid #eee} th{background:#f6f6f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%} .note{color:#555;font-size:.9em} code{background:#f3f3f3;padding:0 .25em}
"""


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, tables (header + rows) and PNG figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[object]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def render(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for caption, header, rows in section.tables:
            parts.append(
                f"<table><caption class='note'>{html.escape(caption)}</caption><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                + "</tr>"
            )
            parts += ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for caption, png in section.figures:
            data = base64.b64encode(png).decode()
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    """Write the page atomically."""
    page = render(title, sections, subtitle)
    return atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
