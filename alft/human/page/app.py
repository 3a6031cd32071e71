"""The labeling page: a small local web app that feeds a pending batch to human annotators.

``alft label CAMPAIGN`` serves it (``serve``); ``create_app`` builds the ASGI app. One
example at a time, the model's suggestion beside it, the label set searchable from the
keyboard. Every submission ends in ``alft.labeling.submit`` (one transaction), so the
page, the file import and the Prefect form all obey the same rules.

This module holds the routes and the server; ``handout`` decides which example each
annotator sees, ``security`` enforces the rules below, ``render`` fills
``templates/page.html`` and inlines ``static/page.js`` and ``static/page.css``.

Security model (the page runs on a laptop next to a browser that visits other sites):

* binds 127.0.0.1 unless told otherwise; requests whose ``Host`` is not a name of the
  bound address are refused with 421 (DNS rebinding);
* every request carries the campaign token (``alft.labeling.new_token``): the
  ``X-Alft-Token`` header, or ``?token=`` on the HTML page only. Missing: 401, wrong: 403;
* state changes are ``POST`` with a JSON body and the token header; a foreign ``Origin``
  (without one, a foreign ``Referer``), or ``Sec-Fetch-Site: cross-site``, is refused
  (CSRF); bodies over ``max_body`` are 413;
* pool texts are untrusted: HTML-escaped when rendered by the server, set with
  ``textContent`` by the page's script; the script runs under a nonce-based CSP, and
  every response says ``nosniff``, ``DENY`` framing, ``no-referrer`` and ``no-store``.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from alft.config import CampaignConfig
from alft.errors import AlftError
from alft.human.labeling import MAX_RESPONSE_CHARS, LabelItem, LabelRejected, NoPendingBatch
from alft.human.page.handout import LabelPage
from alft.human.page.render import render_page
from alft.human.page.security import WILDCARD_HOSTS, Guard, allowed_host_names, page_csp, problem
from alft.store.batches import Shown

MAX_BODY = 64 * 1024
MAX_ITEMS = 1000


# --------------------------------------------------------------------------- requests
class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_json(request: Request, limit: int) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over the {limit}-byte limit")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(422, f"the body is not valid JSON: {exc}") from None


def _parse_submission(data: Any) -> tuple[str, int | None, list[LabelItem]]:
    if not isinstance(data, dict):
        raise BadRequest(422, "expected a JSON object {round, annotator, items}")
    unknown = sorted(set(data) - {"round", "annotator", "items"})
    if unknown:
        raise BadRequest(422, f"unknown fields: {', '.join(unknown)}")
    annotator = data.get("annotator")
    if not isinstance(annotator, str):
        raise BadRequest(422, "annotator must be a string")
    round_ = data.get("round")
    if round_ is not None and (not isinstance(round_, int) or isinstance(round_, bool)):
        raise BadRequest(422, "round must be an integer")
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise BadRequest(422, "items must be a non-empty list of {id, label, kind}")
    if len(items) > MAX_ITEMS:
        raise BadRequest(413, f"{len(items)} items in one request; at most {MAX_ITEMS}")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise BadRequest(422, f"items[{i}] must be an object {{id, label, kind}}")
        ex, label, kind = it.get("id"), it.get("label"), it.get("kind", "label")
        if not isinstance(ex, str) or not ex:
            raise BadRequest(422, f"items[{i}].id must be a non-empty string")
        if label is not None and not isinstance(label, str):
            raise BadRequest(422, f"items[{i}].label must be a string")
        if not isinstance(kind, str):
            raise BadRequest(422, f"items[{i}].kind must be label, retract or unsure")
        out.append(LabelItem(ex, label, kind, _parse_shown(it.get("shown"), i)))
    return annotator.strip(), round_, out


def _parse_shown(sh: Any, i: int) -> Shown | None:
    """What the page says it showed with an item: a proposal {label, confidence}, a draft
    {draft: true} (the server fills in its text), or nothing."""
    if sh is None:
        return None
    if not isinstance(sh, dict):
        raise BadRequest(422, f"items[{i}].shown must be {{label, confidence}} or {{draft: true}}")
    if sh.get("draft") is True:
        return Shown("draft")
    label, conf = sh.get("label"), sh.get("confidence")
    if not isinstance(label, str):
        raise BadRequest(422, f"items[{i}].shown.label must be a string")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float))):
        raise BadRequest(422, f"items[{i}].shown.confidence must be a number or null")
    try:
        return Shown("label", label, None if conf is None else float(conf))
    except OverflowError:  # an integer of hundreds of digits
        raise BadRequest(422, f"items[{i}].shown.confidence is not a probability") from None


def _annotator_param(request: Request) -> str:
    ann = (request.query_params.get("annotator") or "").strip()
    if not ann:
        raise BadRequest(422, "annotator is required (?annotator=NAME)")
    if len(ann) > 128:
        raise BadRequest(422, "annotator name longer than 128 characters")
    return ann


# --------------------------------------------------------------------------- routes
def create_app(
    cfg: CampaignConfig,
    store,
    name: str,
    *,
    host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
    default_annotator: str | None = None,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The labeling app for campaign ``name``; ``host`` is the address it will be bound to."""
    page = LabelPage(cfg, store, name, default_annotator=default_annotator)
    if page.generation and max_body == MAX_BODY:
        # one written response may be long (UTF-8 up to 4 bytes a character, JSON escapes)
        max_body = 6 * MAX_RESPONSE_CHARS + 4096

    async def index(request: Request) -> Response:
        ann = (request.query_params.get("annotator") or default_annotator or "").strip() or None
        snap = await run_in_threadpool(page.snapshot)
        first = None
        if snap.batch is not None:
            queue = snap.batch.queue_for(ann) if ann else snap.batch.remaining()
            if queue:
                sel = next(s for s in snap.batch.items if s["example_id"] == queue[0])
                first = page.texts[int(sel["pool_id"])]
        nonce = secrets.token_urlsafe(18)
        body = render_page(page, snap, first, nonce)
        return HTMLResponse(body, headers={"Content-Security-Policy": page_csp(nonce)})

    async def api_next(request: Request) -> Response:
        try:
            ann = _annotator_param(request)
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        skip = request.query_params.getlist("skip")[:500]
        first = request.query_params.get("first") or None
        return JSONResponse(await run_in_threadpool(page.next_for, ann, skip, first))

    async def api_status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(page.status))

    async def api_labels(request: Request) -> Response:
        try:
            data = await _read_json(request, max_body)
            annotator, round_, items = _parse_submission(data)
            result = await run_in_threadpool(page.submit, annotator, round_, items)
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        except NoPendingBatch as exc:
            return problem(409, str(exc))
        except LabelRejected as exc:
            stale = any(why.startswith("stale") for _, why in exc.problems)
            return JSONResponse(
                {"error": str(exc), "problems": [{"id": ex, "reason": why} for ex, why in exc.problems]},
                status_code=409 if stale else 422,
            )
        return JSONResponse(result)

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/api/next", api_next, methods=["GET"]),
        Route("/api/status", api_status, methods=["GET"]),
        Route("/api/labels", api_labels, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Guard, page=page, hosts=allowed_host_names(host, allowed_hosts), max_body=max_body)
    app.state.page = page
    return app


# --------------------------------------------------------------------------- serving
def bind(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening socket (port 0: any free one); AlftError naming the address when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket says so. With Nagle on, each response's body (a second write after its headers)
    # waited for the client's delayed ACK: 40-48 ms per request (0.5 ms with it, loopback).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AlftError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_for(sock: socket.socket, host: str, token: str | None = None) -> str:
    """The page's address on ``sock`` (loopback when bound to every interface)."""
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in shown:
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    return f"{base}/?token={token}" if token else base


def make_server(app, sock: socket.socket):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # the page URL carries the token: keep it out of logs
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    return server


def serve(app, sock: socket.socket) -> None:
    """Serve until Ctrl-C (uvicorn handles the signal and shuts down gracefully)."""
    make_server(app, sock).run(sockets=[sock])


@contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the app on a real uvicorn server in a background thread; yields its base URL."""
    sock = bind(host, port)
    server = make_server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="alft-labelpage")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the labeling server did not start")
        time.sleep(0.02)
    try:
        yield url_for(sock, host)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
