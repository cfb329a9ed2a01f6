"""The report page's building blocks: escaping, number formatting, tables, embedded images, notes for
what is missing, and the page's style sheet."""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass

import pandas as pd

log = logging.getLogger(__name__)


class Missing(Exception):
    """A section's artifact is absent: the message says which and why (shown instead of the section)."""


@dataclass
class Section:
    key: str
    title: str
    body: str = ""
    status: str = "ok"  # ok | missing | error


# ---------------------------------------------------------------------------------------------- helpers
def esc(x: object) -> str:
    return html.escape(str(x))


def fmt(x: object) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v) for v in x)
    return str(x)


def img_tag(data: bytes, mime: str, alt: str, css: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{b64}" alt="{esc(alt)}"{f" class={css!r}" if css else ""}>'


def kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in rows if v is not None)
    return f'<table class="kv">{body}</table>'


def df_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="grid", float_format=lambda v: f"{v:.4g}", na_rep="")


def missing_note(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1240px;padding:1em 2em;
color:#222;background:#fff}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em}.status-ok{color:#2a7}.status-missing{color:#b80}.status-error{color:#c33}
img.wide{max-width:100%;display:block;margin:.5em 0}img.render{width:min(100%,960px);image-rendering:pixelated}
figure{margin:.5em 0}figcaption,.caption{color:#555;font-size:.9em}
.missing{background:#fff6e0;border-left:4px solid #e0a800;padding:.4em .8em}
.error{background:#fde8e8;border-left:4px solid #c33;padding:.4em .8em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
table.kv th{font-weight:600;color:#444}table.grid th{background:#f4f4f4}
"""
