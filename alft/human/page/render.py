"""The labeling page's HTML: ``templates/page.html`` with the boot data, style and script.

The style and script (``static/``) go into the page inline, under the nonce of the
response's CSP (``security.page_csp``): the browser then needs no second request, and
so no second way to carry the token. Every value put into the template is escaped here;
the boot data travels as JSON in a ``<script type="application/json">`` block.
"""

from __future__ import annotations

import html
import json
from typing import Any

from alft.human.page.assets import read
from alft.human.page.handout import LabelPage, Snapshot
from alft.human.page.security import TOKEN_HEADER

_PAGE = read("templates", "page.html")
# template field -> the static file inlined there
INLINED = {"css": "page.css", "js": "page.js"}
_INLINE = {field: read("static", name) for field, name in INLINED.items()}


def json_for_html(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> block."""
    s = json.dumps(value, ensure_ascii=False)
    return (
        s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def render_page(page: LabelPage, snap: Snapshot, first_text: str | None, nonce: str) -> str:
    e = html.escape
    prog = page.progress(snap)
    boot = {
        "campaign": page.name,
        "labels": page.labels,
        "budget": page.budget,
        "overlap": page.overlap,
        "mode": "generation" if page.generation else "classification",
        "defaultAnnotator": page.default_annotator,
        "preselect": page.preselect_min,
        "tokenHeader": TOKEN_HEADER,
    }
    batch = prog["batch"]
    size = batch["size"] if batch else 0
    done = batch["done"] if batch else 0
    initial = e(first_text) if first_text is not None else "No batch is waiting for labels."
    return _PAGE.format(
        nonce=nonce,
        name=e(page.name),
        round=e(str(snap.round) if snap.round is not None else "–"),
        size=size,
        done=done,
        labeled=prog["labeled"],
        budget=page.budget,
        initial=initial,
        boot=json_for_html(boot),
        **_INLINE,
    )
