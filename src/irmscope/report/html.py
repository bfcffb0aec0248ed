"""A single self-contained HTML page: sections of text, tables and embedded PNG plots, and every table as CSV.

The CSV files sit in ``tables/`` beside the page, one per table, named after its caption; the page links
each table to its file, and its CSV files are replaced with every report so no stale table survives.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from irmscope.io import atomic_write, write_json

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{padding:.3em .7em;text-align:left;
border-bottom:1px solid #eee} th{background:#f6f6f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%} .note{color:#555;font-size:.9em} code{background:#f3f3f3;padding:0 .25em}
.feature{margin:1em 0;padding:.5em;border:1px solid #eee} .ctx{font-family:monospace;white-space:pre-wrap;
font-size:.85em;margin:.2em 0}
"""


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, tables (header + rows) and PNG figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[object]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    html: list[str] = field(default_factory=list)  # trusted fragments built (and escaped) by irmscope


def interval(estimate: dict[str, float] | None, signed: bool = False) -> str:
    """``value [low, high]`` to three decimals (with signs when ``signed``); ``-`` when there is none."""
    if not estimate:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(estimate['value'])} [{f.format(estimate['low'])}, {f.format(estimate['high'])}]"


TABLES_DIR = "tables"


def table_file_names(sections: Sequence[Section]) -> list[str]:
    """The CSV file name of every table, in page order: the caption's slug, made unique with a counter."""
    names: list[str] = []
    for section in sections:
        for caption, _, _ in section.tables:
            slug = re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:60].strip("-") or "table"
            name, n = f"{slug}.csv", 2
            while name in names:
                name, n = f"{slug}-{n}.csv", n + 1
            names.append(name)
    return names


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


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
    csv_names = iter(table_file_names(sections))
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for caption, header, rows in section.tables:
            link = f"{TABLES_DIR}/{next(csv_names)}"
            parts.append(
                f"<table><caption class='note'>{html.escape(caption)} "
                f"(<a href='{html.escape(link)}'>CSV</a>)</caption><tr>"
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
        parts += section.html
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    """Write the page atomically, and each of its tables as CSV (full precision) under ``tables/``."""
    path = Path(path)
    tables = path.parent / TABLES_DIR
    tables.mkdir(parents=True, exist_ok=True)
    for stale in tables.glob("*.csv"):
        stale.unlink()
    names = iter(table_file_names(sections))
    for section in sections:
        for _, header, rows in section.tables:
            text = _csv_text(header, rows)
            atomic_write(tables / next(names), lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    page = render(title, sections, subtitle)
    return atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def write_page(
    out_dir: str | Path, name: str, data: object, title: str, sections: Sequence[Section], subtitle: str = ""
) -> Path:
    """Write ``name.json`` (``data``) and the page ``name.html`` with its tables as CSV under ``out_dir``:
    what a command that builds on a finished run (compare, edit) leaves behind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{name}.json", data)
    return write_report(out_dir / f"{name}.html", title, sections, subtitle=subtitle)
