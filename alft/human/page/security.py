"""Who may talk to the page and what every response says: tokens, Host, Origin, headers.

``Guard`` runs before every route (the rules are listed in ``alft.human.page.app``);
``page_csp`` is the policy of the one HTML page, whose script and style are allowed by a
fresh nonce per response.
"""

from __future__ import annotations

import html

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from alft.human.page.assets import read
from alft.human.page.handout import LabelPage

TOKEN_HEADER = "X-Alft-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")

_MESSAGE = read("templates", "message.html")


def _host_name(host_header: str) -> str:
    """``"[::1]:8765"`` -> ``"::1"``, ``"localhost:80"`` -> ``"localhost"``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_host_names(bind_host: str, extra: list[str] | None = None) -> set[str] | None:
    """Host names the app answers to; None (any) when bound to every interface."""
    if bind_host in WILDCARD_HOSTS:
        return None
    names = {bind_host.lower().strip("[]")}
    if names & set(LOOPBACK_NAMES):
        names |= set(LOOPBACK_NAMES)
    names |= {x.lower() for x in extra or []}
    return names


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def page_csp(nonce: str) -> str:
    """The HTML page's policy: only the elements carrying ``nonce`` run or style."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def message_page(title: str, text: str) -> str:
    return _MESSAGE.format(title=html.escape(title), text=html.escape(text))


class Guard:
    """ASGI middleware: host, token, origin and size checks before any route; headers after."""

    def __init__(self, app, page: LabelPage, hosts: set[str] | None, max_body: int) -> None:
        self.app = app
        self.page = page
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                if b"content-security-policy" not in have:
                    headers.append((b"content-security-policy", DEFAULT_CSP))
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        refusal = await self.check(request)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def check(self, request: Request) -> Response | None:
        path = request.url.path
        is_page = path == "/" and request.method in ("GET", "HEAD")
        host = request.headers.get("host", "")
        if self.hosts is not None and _host_name(host) not in self.hosts:
            # 421 Misdirected Request: the name is not this server's (DNS rebinding), which is not
            # an authorisation failure (401/403 are about the token)
            return problem(421, f"unexpected Host header {host!r}: open the page at the address `alft label` printed")
        token = request.headers.get(TOKEN_HEADER)
        if token is None and is_page:
            token = request.query_params.get("token")
        if not token:
            if is_page:
                return HTMLResponse(message_page("Token needed", "Open the page with the address `alft label` printed "
                                                  "(it ends in ?token=...)."), status_code=401)
            return problem(401, f"missing token: send the campaign token in the {TOKEN_HEADER} header")
        ok = await run_in_threadpool(self.page.check, token)
        if not ok:
            if is_page:
                return HTMLResponse(message_page("Wrong token", "This token is not (or no longer) the campaign's: "
                                                  "use the address from the latest `alft label`."), status_code=403)
            return problem(403, "wrong token (a newer `alft label` replaces the old one)")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get(TOKEN_HEADER) is None:
                return problem(403, f"state changes need the token in the {TOKEN_HEADER} header")
            origin = request.headers.get("origin")
            own = f"{request.url.scheme}://{host}".lower()
            if origin is not None and origin.lower() != own:
                return problem(403, f"cross-origin request refused (Origin {origin!r} is not {own!r})")
            # Without an Origin (older clients), a Referer naming another site is the same
            # attack; the page itself sends none (no-referrer), so its own posts pass.
            referer = request.headers.get("referer")
            if origin is None and referer is not None and not (
                referer.lower() == own or referer.lower().startswith(own + "/")
            ):
                return problem(403, f"cross-origin request refused (Referer {referer!r} is not on {own!r})")
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return problem(403, "cross-site request refused")
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return problem(415, "send JSON (Content-Type: application/json)")
            length = request.headers.get("content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    return problem(400, "bad Content-Length")
                if n > self.max_body:
                    return problem(413, f"request body of {n} bytes is over the {self.max_body}-byte limit")
        return None
