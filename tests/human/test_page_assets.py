"""The labeling page's own files: ESLint on its script, what the page serves, what a wheel ships.

The script and style live in ``alft/human/page/static`` and are inlined into
``templates/page.html`` under the response's CSP nonce (``alft.human.page.render``).
ESLint comes from the npm registry at the versions package-lock.json pins (``make test``
installs ``node_modules``); without it the lint test fails rather than skips, since a
skip would let an unlinted script through.
"""

from __future__ import annotations

import fnmatch
import json
import re
import string
import subprocess
import tomllib
from pathlib import Path

from tests.human.test_labelpage import auth
from tests.human.test_labelpage import bank_pool as bank_pool, camp as camp, client as client  # fixtures, found by name

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "alft" / "human" / "page"
ESLINT = ROOT / "node_modules" / ".bin" / "eslint"


def csp_directives(header: str) -> dict[str, str]:
    return dict((part.strip().split(" ", 1) + [""])[:2] for part in header.split(";") if part.strip())


# --------------------------------------------------------------------------- lint
def test_eslint_finds_nothing_in_the_page_script():
    assert ESLINT.exists(), f"ESLint is not installed ({ESLINT.relative_to(ROOT)} is missing): run make test, it installs node_modules"
    scripts = sorted((PKG / "static").glob("*.js"))
    assert scripts, "no script in alft/human/page/static"
    proc = subprocess.run(
        [str(ESLINT), "--format", "json", "--max-warnings", "0", "alft/human/page/static", "eslint.config.js"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.stdout.strip(), f"ESLint printed no report (exit {proc.returncode}): {proc.stderr.strip()}"
    results = json.loads(proc.stdout)
    found = [f"{Path(r['filePath']).relative_to(ROOT)}:{m.get('line')}:{m.get('column')} {m.get('ruleId')}: {m['message']}"
             for r in results for m in r["messages"]]
    assert not found, "ESLint:\n" + "\n".join(found)
    assert proc.returncode == 0, proc.stderr
    linted = {Path(r["filePath"]) for r in results}
    assert linted == {*scripts, ROOT / "eslint.config.js"}  # nothing ignored by the config's file patterns


# --------------------------------------------------------------------------- serving
def test_the_page_carries_its_script_and_style_under_the_nonce(camp, client):
    r = client.get(f"/?token={camp.token}")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = csp_directives(r.headers["content-security-policy"])
    nonce = csp["script-src"].removeprefix("'nonce-").removesuffix("'")
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", nonce), csp
    assert csp["script-src"] == csp["style-src"] == f"'nonce-{nonce}'"
    assert (csp["default-src"], csp["connect-src"], csp["frame-ancestors"]) == ("'none'", "'self'", "'none'")
    inline = {m.group(1): m.group(2) for m in re.finditer(rf'<(script|style) nonce="{nonce}">(.*?)</\1>', r.text, re.S)}
    assert inline == {
        "script": (PKG / "static" / "page.js").read_text(encoding="utf-8"),
        "style": (PKG / "static" / "page.css").read_text(encoding="utf-8"),
    }
    # the API and the refusals allow no script or style at all
    for resp in (client.get("/api/status", headers=auth(camp)), client.get("/")):
        d = csp_directives(resp.headers["content-security-policy"])
        assert d["default-src"] == "'none'" and "script-src" not in d and "style-src" not in d
        assert resp.headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["content-type"] == "text/html; charset=utf-8"


# --------------------------------------------------------------------------- packaging
def test_every_file_the_templates_use_is_in_the_package_and_the_wheel():
    from alft.human.page.render import INLINED

    templates = sorted((PKG / "templates").glob("*.html"))
    assert {t.name for t in templates} >= {"page.html", "message.html"}
    fields = {f for t in templates for _, f, _, _ in string.Formatter().parse(t.read_text(encoding="utf-8")) if f}
    assert set(INLINED) <= fields, f"render.INLINED names fields no template has: {set(INLINED) - fields}"
    static = {p.name for p in (PKG / "static").iterdir() if p.is_file()}
    assert set(INLINED.values()) == static, "every static file is inlined by a template, and exists"
    for t in templates:
        # CSP default-src 'none' and the token rule block anything fetched: data: URLs only
        refs = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', t.read_text(encoding="utf-8"), re.I)
        assert all(ref.startswith("data:") for ref in refs), (t.name, refs)
    for name in static:
        # a closing tag inside an inlined file would end its element early
        text = (PKG / "static" / name).read_text(encoding="utf-8").lower()
        assert "</script" not in text and "</style" not in text and "<!--" not in text, name
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["alft.human.page"]
    shipped = [f"templates/{t.name}" for t in templates] + [f"static/{n}" for n in static]
    assert all(any(fnmatch.fnmatch(p, g) for g in globs) for p in shipped), (shipped, globs)
