"""The labeling page: a small local web app that feeds a pending batch to human annotators.

``alft label CAMPAIGN`` serves it (``serve``); ``create_app`` builds the ASGI app. One
example at a time, the model's suggestion beside it, the label set searchable from the
keyboard. Every submission ends in ``alft.labeling.submit`` (one transaction), so the
page, the file import and the Prefect form all obey the same rules.

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

import html
import json
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from alft.config import CampaignConfig
from alft.errors import AlftError
from alft.resolve import AgreementCounts, agreement_counts
from alft.human.labeling import (
    LabelItem,
    LabelRejected,
    NoPendingBatch,
    PendingBatch,
    check_token,
    pending_round,
    resolve,
    resume_if_complete,
    submit,
)

log = logging.getLogger("alft")

TOKEN_HEADER = "X-Alft-Token"
MAX_BODY = 64 * 1024
MAX_ITEMS = 1000
CLAIM_TTL_S = 120.0
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


# --------------------------------------------------------------------------- state
@dataclass
class Snapshot:
    """One consistent read of the store: the pending batch and its label events.

    Earlier rounds' labels cannot change while a round waits (every route writes to the
    pending batch only), so what the page shows about them is computed once per round:
    ``labeled_before`` and ``agreement_before``.
    """

    round: int | None
    batch: PendingBatch | None
    events: list[dict[str, Any]]  # the pending batch's events (any round), oldest first
    states: dict[str, Any]  # example id -> LabelState, the pending batch only
    labeled_before: int = 0  # resolved labels outside the pending batch
    agreement_before: Any = None  # AgreementCounts outside the pending batch


class LabelPage:
    """What the app keeps per process: pool texts, label set, suggestions, claims."""

    def __init__(
        self,
        cfg: CampaignConfig,
        store,
        name: str,
        *,
        default_annotator: str | None = None,
        claim_ttl: float = CLAIM_TTL_S,
    ) -> None:
        from alft.campaign.context import CampaignContext, campaign_data

        row = store.campaign(name)
        if row is None:
            raise AlftError(f"no campaign {name!r} in the store")
        data = campaign_data(cfg)
        if row.get("pool_digest") and row["pool_digest"] != data.pool.digest:
            raise AlftError(
                f"campaign {name!r}: the pool data on disk ({data.pool.source}) is not the data the "
                "campaign was created with; the page would show the wrong texts"
            )
        self.cfg = cfg
        self.store = store
        self.name = name
        self.labels: list[str] = list(row.get("labels") or data.labels)
        self.texts: list[str] = data.pool.texts
        # generation: the expert writes (or corrects a draft of) the response to an instruction
        self.generation = cfg.task == "generation"
        self.pool = data.pool
        self.overlap = cfg.oracle.overlap
        self.policy = cfg.oracle.policy()
        self.budget = cfg.budget
        self.default_annotator = default_annotator
        self.ctx = CampaignContext(config=cfg, uid=row["uid"])
        self.claim_ttl = claim_ttl
        self._lock = threading.Lock()
        # Handing out (snapshot -> pick -> claim) and submitting (commit -> release the claim)
        # must not interleave: a pick from a snapshot older than a commit whose claim is already
        # released hands the just-labeled example to a second annotator (benchmarks/label_load.py
        # saw 5 of 200 examples labeled twice by 20 clients before this lock).
        self._handout = threading.RLock()
        # SQLite serialises every transaction (reads too: BEGIN IMMEDIATE), and its busy
        # handler sleeps in growing steps; queueing this process's requests on a lock
        # instead keeps 20 concurrent annotators from oversleeping. Other databases run
        # their transactions side by side.
        self.db_lock: Any = threading.Lock() if store.engine.dialect.name == "sqlite" else nullcontext()
        self._probs: dict[int, tuple[int, dict[int, int], np.ndarray] | None] = {}
        self._round_cache: dict[int | None, tuple] = {}
        self._claims: dict[str, tuple[str, float]] = {}  # annotator -> (example id, when)

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> Snapshot:
        """The pending batch and all events, read in one transaction (one consistent view)."""
        st = self.store
        with self.db_lock, st.engine.connect() as conn:
            r = pending_round(st, self.name, conn)
            fixed = self._round_cache.get(r)
            if fixed is None:
                # once per pending round: its batch and what lies outside it
                items = st.selections(self.name, r, conn=conn) if r is not None else []
                ids = {s["example_id"] for s in items}
                outside = [e for e in st.label_events(self.name, conn=conn) if e["example_id"] not in ids]
                before = sum(1 for v in resolve(outside, self.policy).values() if v.label is not None)
                fixed = (items, before, agreement_counts(outside))
                self._round_cache = {r: fixed}
            items, before, agree_before = fixed
            events = st.batch_label_events(self.name, r, conn=conn) if r is not None else []
        states = resolve(events, self.policy)
        batch = None
        if r is not None:
            batch = PendingBatch(round=r, items=items, states=states, policy=self.policy)
        return Snapshot(r, batch, events, states, before, agree_before)

    def suggestion(self, round_: int, pool_id: int) -> list[tuple[str, float]]:
        """The model's top labels for a candidate of ``round_`` (best first); [] without probs."""
        from alft.campaign.rounds import round_files

        files = round_files(self.ctx, round_)
        try:
            stamp = files["probs"].stat().st_mtime_ns
        except OSError:
            return []
        with self._lock:
            cached = self._probs.get(round_)
        if cached is None or cached[0] != stamp:
            try:
                probs = np.load(files["probs"])
                cand = np.load(files["candidates"])
            except (OSError, ValueError) as exc:
                log.warning("round %d: cannot read the model's probabilities (%s)", round_, exc)
                return []
            if probs.ndim != 2 or probs.shape[0] != cand.shape[0] or probs.shape[1] != len(self.labels):
                log.warning("round %d: probabilities of shape %s do not fit %d candidates x %d labels",
                            round_, probs.shape, cand.shape[0], len(self.labels))
                return []
            cached = (stamp, {int(p): i for i, p in enumerate(cand.tolist())}, probs)
            with self._lock:
                self._probs = {round_: cached}  # one round pending at a time
        _, index, probs = cached
        row = index.get(int(pool_id))
        if row is None:
            return []
        p = probs[row]
        top = np.argsort(-p, kind="stable")[:5]
        return [(self.labels[int(i)], float(p[int(i)])) for i in top if math.isfinite(float(p[int(i)]))]

    # ------------------------------------------------------------------ claims
    def _others_claims(self, annotator: str) -> dict[str, int]:
        now = time.monotonic()
        out: dict[str, int] = {}
        with self._lock:
            for ann, (ex, t) in list(self._claims.items()):
                if now - t > self.claim_ttl:
                    del self._claims[ann]
                elif ann != annotator:
                    out[ex] = out.get(ex, 0) + 1
        return out

    def claim(self, annotator: str, example_id: str | None) -> None:
        with self._lock:
            if example_id is None:
                self._claims.pop(annotator, None)
            else:
                self._claims[annotator] = (example_id, time.monotonic())

    # ------------------------------------------------------------------ views
    def progress(self, snap: Snapshot, annotator: str | None = None) -> dict[str, Any]:
        labeled = snap.labeled_before + sum(1 for s in snap.states.values() if s.label is not None)
        out: dict[str, Any] = {
            "campaign": self.name,
            "round": snap.round,
            "labeled": labeled,
            "budget": self.budget,
            "overlap": self.overlap,
            "agreement": (agreement_counts(snap.events) + (snap.agreement_before or AgreementCounts())).summary(),
        }
        if snap.batch is not None:
            b = snap.batch
            remaining = b.remaining()
            out["batch"] = {
                "size": len(b.items),
                "done": len(b.items) - len(remaining),
                "remaining": len(remaining),
                "disputed": sum(1 for s in b.states.values() if s.status == "disputed"),
            }
            if annotator:
                out["batch"]["queue"] = len(b.queue_for(annotator))
                out["batch"]["mine"] = sum(1 for s in b.states.values() if annotator in s.votes)
        else:
            out["batch"] = None
        return out

    def next_for(self, annotator: str, skip: list[str], first: str | None) -> dict[str, Any]:
        """The example to show ``annotator`` next, with the numbers the page displays."""
        with self._handout:
            return self._next_for(annotator, skip, first)

    def _next_for(self, annotator: str, skip: list[str], first: str | None) -> dict[str, Any]:
        snap = self.snapshot()
        out = self.progress(snap, annotator)
        out["example"] = None
        out["undo"] = None
        if snap.batch is None:
            out["message"] = "no batch is waiting for labels"
            self.claim(annotator, None)
            return out
        b = snap.batch
        ids = set(b.example_ids)
        mine: dict[str, dict[str, Any]] = {}  # example -> this annotator's latest event
        for e in snap.events:
            if e["annotator"] == annotator and e["example_id"] in ids:
                mine[e["example_id"]] = e
        last_label = max(
            (e for e in mine.values() if (e.get("kind") or "label") == "label"),
            key=lambda e: e["event_id"],
            default=None,
        )
        if last_label is not None:
            out["undo"] = {"id": last_label["example_id"], "label": last_label["label"]}
        queue = b.queue_for(annotator)
        if not queue:
            out["message"] = (
                "this batch is complete" if b.complete else "nothing left for you: the rest waits for other annotators"
            )
            self.claim(annotator, None)
            return out
        skip_rank = {ex: i + 1 for i, ex in enumerate(dict.fromkeys(skip))}
        busy = self._others_claims(annotator)

        def needs(ex: str) -> int:
            st = b.states.get(ex)
            return st.needs if st is not None else self.overlap

        def order(pair: tuple[int, str]) -> tuple:
            i, ex = pair
            unsure = (mine.get(ex) or {}).get("kind") == "unsure"
            return (ex != first, unsure, busy.get(ex, 0) >= needs(ex), skip_rank.get(ex, 0), i)

        # An example already on enough other annotators' screens is not handed out again (it
        # would be labeled twice); the page asks again every few seconds, and a claim lapses
        # after claim_ttl when its annotator walks away. ``first`` (undo) is always shown.
        free = [(i, x) for i, x in enumerate(queue) if x == first or busy.get(x, 0) < needs(x)]
        if not free:
            out["message"] = (
                f"the {len(queue)} example{'s' if len(queue) != 1 else ''} left for you "
                f"{'are' if len(queue) != 1 else 'is'} on other annotators' screens; "
                "this page checks again every few seconds"
            )
            self.claim(annotator, None)
            return out
        ex = min(free, key=order)[1]
        self.claim(annotator, ex)
        sel = next(s for s in b.items if s["example_id"] == ex)
        st = b.states.get(ex)
        sugg = self.suggestion(b.round, sel["pool_id"])
        pool_id = int(sel["pool_id"])
        out["example"] = {
            "id": ex,
            "text": self.texts[pool_id] if 0 <= pool_id < len(self.texts) else "",
            "round": b.round,
            "position": sel["position"],
            # blind: a control-arm example shows the round's strategy (alft/campaign/control.py)
            "strategy": next((s["strategy"] for s in b.items if s["strategy"] != "random-control"), sel["strategy"]),
            "suggestion": sugg[0][0] if sugg else None,
            "confidence": sugg[0][1] if sugg else None,
            "suggestions": [{"label": lab, "p": p} for lab, p in sugg],
            "status": st.status if st is not None else "pending",
            "votes": len(st.votes) if st is not None else 0,
            "needs": needs(ex),
            "unsure": (mine.get(ex) or {}).get("kind") == "unsure",
        }
        if self.generation and 0 <= pool_id < len(self.texts):
            pool = self.pool
            draft = pool.candidates[pool_id] if pool.candidates is not None else ""
            own = (mine.get(ex) or {}) if (mine.get(ex) or {}).get("kind") == "label" else {}
            out["example"].update(
                instruction=pool.instructions[pool_id],
                input=pool.inputs[pool_id] if pool.inputs is not None else "",
                # a routed-back example shows the annotator's own answer to revise
                draft=own.get("label") or draft,
                has_candidate=pool.candidates is not None,
            )
        if st is not None and st.status == "disputed":
            # routed back: show how the votes split (not who cast them) and this annotator's own
            tally: dict[str, int] = {}
            for lab in st.votes.values():
                tally[lab] = tally.get(lab, 0) + 1
            out["example"]["tally"] = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
            out["example"]["your_vote"] = st.votes.get(annotator)
        return out

    def status(self) -> dict[str, Any]:
        snap = self.snapshot()
        out = self.progress(snap)
        annotators: dict[str, int] = {}
        if snap.batch is not None:
            ids = set(snap.batch.example_ids)
            for e in snap.events:
                if e["example_id"] in ids and (e.get("kind") or "label") == "label":
                    annotators[e["annotator"]] = annotators.get(e["annotator"], 0) + 1
        out["annotators"] = annotators
        return out

    def check(self, token: str) -> bool:
        with self.db_lock:
            return check_token(self.store, self.name, token)

    def submit(self, annotator: str, round_: int | None, items: list[LabelItem]) -> dict[str, Any]:
        with self._handout:  # commit and claim release as one step for next_for (see __init__)
            with self.db_lock:
                res = self._submit(annotator, round_, items)
            self.claim(annotator, None)
        out: dict[str, Any] = {
            "round": res.round,
            "written": res.written,
            "unchanged": res.unchanged,
            "remaining": res.remaining,
            "complete": res.complete,
            "resumed": None,
        }
        try:
            out["resumed"] = resume_if_complete(self.store, self.name, res)
        except Exception as exc:  # the labels are stored; the next completing submit retries
            log.warning("round %d is complete but resuming its flow run failed: %s", res.round, exc)
            out["resume_error"] = str(exc)
        return out

    def _submit(self, annotator: str, round_: int | None, items: list[LabelItem]):
        return submit(
            self.store,
            self.name,
            items,
            annotator=annotator,
            source="page",
            label_set=self.labels,
            overlap=self.policy,
            round_=round_,
        )


# --------------------------------------------------------------------------- guard
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


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
            return _problem(421, f"unexpected Host header {host!r}: open the page at the address `alft label` printed")
        token = request.headers.get(TOKEN_HEADER)
        if token is None and is_page:
            token = request.query_params.get("token")
        if not token:
            if is_page:
                return HTMLResponse(_message_page("Token needed", "Open the page with the address `alft label` printed "
                                                  "(it ends in ?token=...)."), status_code=401)
            return _problem(401, f"missing token: send the campaign token in the {TOKEN_HEADER} header")
        ok = await run_in_threadpool(self.page.check, token)
        if not ok:
            if is_page:
                return HTMLResponse(_message_page("Wrong token", "This token is not (or no longer) the campaign's: "
                                                  "use the address from the latest `alft label`."), status_code=403)
            return _problem(403, "wrong token (a newer `alft label` replaces the old one)")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get(TOKEN_HEADER) is None:
                return _problem(403, f"state changes need the token in the {TOKEN_HEADER} header")
            origin = request.headers.get("origin")
            own = f"{request.url.scheme}://{host}".lower()
            if origin is not None and origin.lower() != own:
                return _problem(403, f"cross-origin request refused (Origin {origin!r} is not {own!r})")
            # Without an Origin (older clients), a Referer naming another site is the same
            # attack; the page itself sends none (no-referrer), so its own posts pass.
            referer = request.headers.get("referer")
            if origin is None and referer is not None and not (
                referer.lower() == own or referer.lower().startswith(own + "/")
            ):
                return _problem(403, f"cross-origin request refused (Referer {referer!r} is not on {own!r})")
            if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return _problem(403, "cross-site request refused")
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return _problem(415, "send JSON (Content-Type: application/json)")
            length = request.headers.get("content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    return _problem(400, "bad Content-Length")
                if n > self.max_body:
                    return _problem(413, f"request body of {n} bytes is over the {self.max_body}-byte limit")
        return None


# --------------------------------------------------------------------------- routes
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
        out.append(LabelItem(ex, label, kind))
    return annotator.strip(), round_, out


def _annotator_param(request: Request) -> str:
    ann = (request.query_params.get("annotator") or "").strip()
    if not ann:
        raise BadRequest(422, "annotator is required (?annotator=NAME)")
    if len(ann) > 128:
        raise BadRequest(422, "annotator name longer than 128 characters")
    return ann


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
        from alft.human.labeling import MAX_RESPONSE_CHARS

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
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return HTMLResponse(body, headers={"Content-Security-Policy": csp})

    async def api_next(request: Request) -> Response:
        try:
            ann = _annotator_param(request)
        except BadRequest as exc:
            return _problem(exc.status, str(exc))
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
            return _problem(exc.status, str(exc))
        except NoPendingBatch as exc:
            return _problem(409, str(exc))
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
    sock = socket.socket(family, socket.SOCK_STREAM)
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


# --------------------------------------------------------------------------- the page
def _json_for_html(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> block."""
    s = json.dumps(value, ensure_ascii=False)
    return (
        s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def _message_page(title: str, text: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>alft · "
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
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
        boot=_json_for_html(boot),
        css=_CSS,
        js=_JS,
    )


_CSS = """
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{display:flex;flex-wrap:wrap;gap:.4rem 1.4rem;align-items:center;padding:.7rem 1.2rem;background:#1d2330;color:#e8ebf1}
header h1{font-size:1.05rem;margin:0;font-weight:600}
header .meta{font-size:.9rem;opacity:.85}
header button{margin-left:auto}
main{max-width:58rem;margin:1rem auto;padding:0 1rem}
.bar{display:flex;align-items:center;gap:.8rem;font-size:.9rem;margin-bottom:.8rem}
progress{flex:1;height:.9rem}
#card{background:#fff;border:1px solid #d5d9e2;border-radius:.5rem;padding:1.1rem 1.3rem;margin-bottom:.8rem}
#text{font-size:1.25rem;white-space:pre-wrap;overflow-wrap:anywhere;margin:.2rem 0 .8rem}
#exmeta,#sugg{font-size:.88rem;color:#566}
#sugg b{color:#1d2330}
#filterrow{display:flex;gap:.6rem;align-items:center;margin:.6rem 0}
#filter{flex:1;font-size:1.05rem;padding:.45rem .6rem;border:1px solid #aab;border-radius:.35rem}
#mode{font-size:.8rem;color:#667}
ol#matches{list-style:none;padding:0;margin:0;columns:2 18rem;column-gap:1rem}
#matches li{padding:.22rem .5rem;border-radius:.3rem;cursor:pointer;break-inside:avoid;display:flex;gap:.5rem}
#matches li .k{display:inline-block;min-width:1.3rem;color:#889;font-variant-numeric:tabular-nums}
#matches li .p{margin-left:auto;color:#889;font-size:.85rem}
#matches li.chosen{background:#2f6fde;color:#fff}
#matches li.chosen .k,#matches li.chosen .p{color:#dde6ff}
#matches li.sugg:not(.chosen){background:#eaf1ff}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:.8rem 0}
button{font:inherit;padding:.35rem .8rem;border-radius:.35rem;border:1px solid #99a;background:#fff;cursor:pointer}
button.primary{background:#2f6fde;color:#fff;border-color:#2f6fde}
#msg{min-height:1.4rem;font-size:.92rem}
#msg.err{color:#b3261e}
#msg.ok{color:#1b7a3a}
.keys{font-size:.82rem;color:#667}
kbd{border:1px solid #bbc;border-bottom-width:2px;border-radius:.25rem;padding:0 .3rem;font-size:.78rem;background:#fff}
#who{position:fixed;inset:0;background:rgba(20,24,32,.55);display:flex;align-items:center;justify-content:center}
#who[hidden]{display:none}
#who form{background:#fff;padding:1.2rem 1.4rem;border-radius:.5rem;display:flex;flex-direction:column;gap:.6rem;min-width:20rem}
#who input{font-size:1rem;padding:.4rem .5rem}
#gen[hidden],#filterrow[hidden],#matches[hidden]{display:none}
#gen label{font-size:.88rem;color:#566;display:block;margin-bottom:.3rem}
#response{width:100%;min-height:12rem;font:15px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace;padding:.6rem;border:1px solid #aab;border-radius:.35rem}
#input{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f5f8;border-radius:.35rem;padding:.5rem .7rem;margin:.2rem 0 .6rem;font-size:.98rem}
#input:empty{display:none}
"""

_JS = r"""
(function () {
  "use strict";
  var boot = JSON.parse(document.getElementById("alft-boot").textContent);
  var params = new URLSearchParams(location.search);
  var token = params.get("token") || "";
  var $ = function (id) { return document.getElementById(id); };
  var state = {
    annotator: null, data: null, example: null, round: null,
    skipped: [], matches: [], chosen: -1, typing: false, busy: false, lastPoll: 0
  };
  var STORE_KEY = "alft.annotator";

  function norm(s) { return String(s).toLowerCase().replace(/[_\-\s]+/g, " ").trim(); }
  var labelNorm = boot.labels.map(norm);

  function say(text, cls) { var m = $("msg"); m.textContent = text || ""; m.className = cls || ""; }

  function api(method, path, body) {
    var opts = { method: method, headers: {}, credentials: "same-origin", cache: "no-store" };
    opts.headers[boot.tokenHeader] = token;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) { var err = new Error(j.error || ("HTTP " + r.status)); err.status = r.status; throw err; }
        return j;
      });
    });
  }

  // ------------------------------------------------------------ annotator
  function askAnnotator() {
    $("who").hidden = false;
    $("who-name").value = state.annotator || "";
    $("who-name").focus();
  }
  $("who").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = $("who-name").value.trim();
    if (!v) { return; }
    setAnnotator(v);
    $("who").hidden = true;
    $("filter").focus();
    load();
  });
  function setAnnotator(v) {
    state.annotator = v.slice(0, 128);
    try { localStorage.setItem(STORE_KEY, state.annotator); } catch (e) { /* private mode */ }
    $("annotator").textContent = state.annotator;
  }

  // ------------------------------------------------------------ labels list
  function rank(i, q) {
    var l = labelNorm[i];
    if (!q || l === q) { return 0; }
    if (l.indexOf(q) === 0) { return 1; }
    var words = l.split(" ");
    if (words.some(function (w) { return w.indexOf(q) === 0; })) { return 2; }
    if (l.indexOf(q) >= 0) { return 3; }
    var parts = q.split(" ");
    if (parts.every(function (p) { return words.some(function (w) { return w.indexOf(p) === 0; }); })) { return 4; }
    if (l.replace(/ /g, "").indexOf(q.replace(/ /g, "")) >= 0) { return 5; }
    return -1;
  }

  function suggestionProb(label) {
    var ex = state.example;
    if (!ex || !ex.suggestions) { return null; }
    for (var i = 0; i < ex.suggestions.length; i++) {
      // below 5% a class is noise, not a suggestion worth ranking or showing
      if (ex.suggestions[i].label === label) { return ex.suggestions[i].p >= 0.05 ? ex.suggestions[i].p : null; }
    }
    return null;
  }

  function refilter() {
    var q = norm($("filter").value);
    var out = [];
    for (var i = 0; i < boot.labels.length; i++) {
      var r = rank(i, q);
      if (r < 0) { continue; }
      var p = suggestionProb(boot.labels[i]);
      out.push({ i: i, r: r, p: p === null ? -1 : p });
    }
    out.sort(function (a, b) { return (a.r - b.r) || (b.p - a.p) || (a.i - b.i); });
    state.matches = out.map(function (m) { return m.i; });
    if (q) { state.chosen = state.matches.length ? 0 : -1; }
    else {
      var s = state.example && state.example.suggestion;
      state.chosen = s ? state.matches.indexOf(boot.labels.indexOf(s)) : -1;
    }
    drawMatches();
    $("mode").textContent = state.typing ? "filtering · Esc clears" : "";
  }

  function drawMatches() {
    var ol = $("matches");
    while (ol.firstChild) { ol.removeChild(ol.firstChild); }
    var sugg = state.example && state.example.suggestion;
    state.matches.forEach(function (li, n) {
      var item = document.createElement("li");
      var k = document.createElement("span");
      k.className = "k";
      k.textContent = n < 9 ? String(n + 1) : "";
      var name = document.createElement("span");
      name.textContent = boot.labels[li];
      item.appendChild(k);
      item.appendChild(name);
      var p = suggestionProb(boot.labels[li]);
      if (p !== null) {
        var ps = document.createElement("span");
        ps.className = "p";
        ps.textContent = Math.round(p * 100) + "%";
        item.appendChild(ps);
      }
      if (boot.labels[li] === sugg) { item.classList.add("sugg"); }
      if (n === state.chosen) { item.classList.add("chosen"); item.setAttribute("aria-selected", "true"); }
      item.dataset.n = String(n);
      item.addEventListener("click", function () { state.chosen = n; drawMatches(); $("filter").focus(); });
      item.addEventListener("dblclick", function () { state.chosen = n; submitChosen(); });
      ol.appendChild(item);
    });
    var chosen = state.chosen >= 0 ? boot.labels[state.matches[state.chosen]] : null;
    $("chosen").textContent = chosen || "—";
    var c = ol.querySelector(".chosen");
    if (c && c.scrollIntoView) { c.scrollIntoView({ block: "nearest" }); }
  }

  function clearFilter() { $("filter").value = ""; state.typing = false; refilter(); }

  // ------------------------------------------------------------ showing
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(x * 100) + "%"; }

  function render(d) {
    state.data = d;
    state.example = d.example;
    state.round = d.round;
    var b = d.batch;
    $("round").textContent = d.round === null || d.round === undefined ? "–" : String(d.round);
    $("bar").max = b ? Math.max(1, b.size) : 1;
    $("bar").value = b ? b.done : 0;
    $("batchcount").textContent = b ? (b.done + " / " + b.size + " in this batch" +
      (b.queue !== undefined ? " · " + b.queue + " left for you" : "")) : "no batch waiting";
    $("labeled").textContent = d.labeled + " / " + d.budget + " labels (campaign)";
    var a = d.agreement || {};
    $("agree").textContent = a.pairs ? ("agreement " + pct(a.percent) + " over " + a.n_items + " examples" +
      (a.kappa === null || a.kappa === undefined ? "" : " · κ " + a.kappa.toFixed(2))) :
      (d.overlap > 1 ? "agreement: no shared examples yet" : "");
    var ex = d.example;
    if (!ex) {
      $("text").textContent = d.message || "Nothing to label.";
      $("exmeta").textContent = "";
      $("sugg").textContent = "";
    } else {
      $("text").textContent = ex.text;
      var meta = "example " + ex.id + " · #" + (ex.position + 1) + " of round " + ex.round + " (" + ex.strategy + ")";
      if (d.overlap > 1) { meta += " · " + ex.votes + " vote(s), needs " + ex.needs + (ex.status === "disputed" ? " · disputed" : ""); }
      if (ex.tally) {
        meta += " · votes: " + ex.tally.map(function (t) { return short(t[0]) + " ×" + t[1]; }).join(", ");
        if (ex.your_vote) { meta += " (yours: " + short(ex.your_vote) + ")"; }
      }
      if (ex.unsure) { meta += " · you marked it unsure"; }
      $("exmeta").textContent = meta;
      var s = $("sugg");
      while (s.firstChild) { s.removeChild(s.firstChild); }
      if (ex.suggestion) {
        s.appendChild(document.createTextNode("model suggests "));
        var bEl = document.createElement("b");
        bEl.textContent = ex.suggestion;
        s.appendChild(bEl);
        s.appendChild(document.createTextNode(" (" + pct(ex.confidence) + " confident) · Enter accepts it"));
      } else {
        s.textContent = "no model suggestion yet (round " + ex.round + ")";
      }
    }
    if (GEN) {
      $("text").textContent = ex ? ex.instruction : (d.message || "Nothing to label.");
      $("input").textContent = ex ? ex.input : "";
      $("response").value = ex ? (ex.draft || "") : "";
      $("response").disabled = !ex;
      $("genlabel").textContent = ex && ex.draft ? "Correct the draft response (Ctrl+Enter saves)" :
        "Write the response (Ctrl+Enter saves)";
      $("sugg").textContent = "";
    }
    $("undoinfo").textContent = d.undo ? ("Backspace undoes: " + short(d.undo.label) + " on " + d.undo.id) : "";
    document.body.dataset.exampleId = ex ? ex.id : "";
    document.body.dataset.ready = "1";
    clearFilter();
  }

  function load(first) {
    if (!state.annotator) { askAnnotator(); return Promise.resolve(); }
    var q = new URLSearchParams();
    q.set("annotator", state.annotator);
    state.skipped.forEach(function (id) { q.append("skip", id); });
    if (first) { q.set("first", first); }
    document.body.dataset.ready = "0";
    return api("GET", "/api/next?" + q.toString()).then(render).catch(function (e) {
      say(e.message, "err");
      document.body.dataset.ready = "1";
    });
  }

  function post(items, okText) {
    if (state.busy) { return Promise.resolve(false); }
    state.busy = true;
    document.body.dataset.ready = "0";
    return api("POST", "/api/labels", { round: state.round, annotator: state.annotator, items: items })
      .then(function (r) {
        items.forEach(function (it) { state.skipped = state.skipped.filter(function (x) { return x !== it.id; }); });
        say(okText + (r.complete ? " · the batch is complete" : ""), "ok");
        return true;
      })
      .catch(function (e) { say(e.message, "err"); return false; })
      .finally(function () { state.busy = false; });
  }

  var GEN = boot.mode === "generation";
  function short(t) { t = String(t); return t.length > 60 ? t.slice(0, 57) + "…" : t; }

  function submitResponse() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    var text = $("response").value;
    if (!text.trim()) { say("write the response first (E or a click puts you in the text box)", "err"); return; }
    post([{ id: ex.id, label: text, kind: "label" }], "saved the response to " + ex.id).then(function (ok) {
      if (ok) { $("response").blur(); load(); }
    });
  }

  function submitChosen() {
    if (GEN) { submitResponse(); return; }
    var ex = state.example;
    if (!ex || state.busy) { return; }
    if (state.chosen < 0) { say("choose a label first: type to filter, 1–9 to pick", "err"); return; }
    var label = boot.labels[state.matches[state.chosen]];
    post([{ id: ex.id, label: label, kind: "label" }], "labeled " + ex.id + " as " + label).then(function () { load(); });
  }

  function unsure() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    post([{ id: ex.id, label: null, kind: "unsure" }], "marked " + ex.id + " unsure").then(function () { load(); });
  }

  function skip() {
    var ex = state.example;
    if (!ex || state.busy) { return; }
    state.skipped = state.skipped.filter(function (x) { return x !== ex.id; });
    state.skipped.push(ex.id);
    say("skipped " + ex.id + " (it comes back at the end)", "ok");
    load();
  }

  function undo() {
    var u = state.data && state.data.undo;
    if (state.busy) { return; }
    if (!u) { say("nothing to undo", "err"); return; }
    post([{ id: u.id, label: null, kind: "retract" }], "undid " + u.label + " on " + u.id).then(function (ok) {
      load(ok ? u.id : undefined);
    });
  }

  // ------------------------------------------------------------ keys
  document.addEventListener("keydown", function (ev) {
    if (!$("who").hidden) { return; }
    if (GEN) {
      // the text box takes every key but Ctrl+Enter (save) and Esc (back to the shortcuts)
      var inBox = document.activeElement === $("response");
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); submitResponse(); return; }
      if (inBox) { if (ev.key === "Escape") { ev.preventDefault(); $("response").blur(); } return; }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var g = ev.key;
      if (g === "Enter") { ev.preventDefault(); submitResponse(); return; }
      if (g === "e" || g === "E") { ev.preventDefault(); $("response").focus(); return; }
      if (g === "s" || g === "S") { ev.preventDefault(); skip(); return; }
      if (g === "u" || g === "U") { ev.preventDefault(); unsure(); return; }
      if (g === "Backspace") { ev.preventDefault(); undo(); return; }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var f = $("filter");
    var k = ev.key;
    var empty = f.value === "";
    if (k === "Enter") { ev.preventDefault(); submitChosen(); return; }
    if (k === "Escape") { ev.preventDefault(); clearFilter(); f.focus(); return; }
    if (/^[1-9]$/.test(k)) {
      ev.preventDefault();
      var n = Number(k) - 1;
      if (n < state.matches.length) { state.chosen = n; drawMatches(); }
      return;
    }
    if (k === "ArrowDown" || k === "ArrowUp") {
      ev.preventDefault();
      if (!state.matches.length) { return; }
      var c = state.chosen < 0 ? (k === "ArrowDown" ? 0 : state.matches.length - 1) :
        (state.chosen + (k === "ArrowDown" ? 1 : -1) + state.matches.length) % state.matches.length;
      state.chosen = c; drawMatches(); return;
    }
    if (empty && !state.typing) {
      if (k === "s" || k === "S") { ev.preventDefault(); skip(); return; }
      if (k === "u" || k === "U") { ev.preventDefault(); unsure(); return; }
      if (k === "Backspace") { ev.preventDefault(); undo(); return; }
      if (k === "/") { ev.preventDefault(); state.typing = true; f.focus(); refilter(); return; }
    }
    if (empty && state.typing && k === "Backspace") { ev.preventDefault(); state.typing = false; refilter(); return; }
    if (document.activeElement !== f && k.length === 1) { f.focus(); }
  }, true);
  $("filter").addEventListener("input", function () {
    if ($("filter").value !== "") { state.typing = true; }
    refilter();
  });
  $("b-submit").addEventListener("click", submitChosen);
  $("b-skip").addEventListener("click", skip);
  $("b-unsure").addEventListener("click", unsure);
  $("b-undo").addEventListener("click", undo);
  $("b-who").addEventListener("click", askAnnotator);

  // a new batch, or other annotators' progress, shows up without a reload
  setInterval(function () {
    if (state.busy || !state.annotator || !$("who").hidden) { return; }
    if (!state.example) { load(); return; }
    api("GET", "/api/status").then(function (d) {
      if (d.round !== state.round) { load(); return; }
      var b = d.batch;
      if (b) { $("bar").max = Math.max(1, b.size); $("bar").value = b.done; }
      $("labeled").textContent = d.labeled + " / " + d.budget + " labels (campaign)";
    }).catch(function () { /* shown on the next action */ });
  }, 5000);

  // ------------------------------------------------------------ start
  var fromUrl = params.get("annotator");
  var saved = null;
  try { saved = localStorage.getItem(STORE_KEY); } catch (e) { saved = null; }
  var who = fromUrl || saved || boot.defaultAnnotator;
  if (GEN) {
    $("gen").hidden = false; $("filterrow").hidden = true; $("matches").hidden = true;
    $("keys").textContent = "Ctrl+Enter save · E edit · Esc leave the text box · Enter save (outside it) · " +
      "S skip · U unsure · Backspace undo your last response";
  }
  if (who) { setAnnotator(who); load(); } else { askAnnotator(); }
  refilter();
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>alft · label {name}</title>
<style nonce="{nonce}">{css}</style>
</head>
<body data-ready="0">
<header>
  <h1>alft · {name}</h1>
  <span class="meta">round <span id="round">{round}</span></span>
  <span class="meta" id="labeled">{labeled} / {budget} labels (campaign)</span>
  <span class="meta" id="agree"></span>
  <span class="meta">annotator: <span id="annotator">–</span></span>
  <button type="button" id="b-who">change</button>
</header>
<main>
  <div class="bar"><progress id="bar" max="{size}" value="{done}"></progress><span id="batchcount">{done} / {size} in this batch</span></div>
  <section id="card" aria-live="polite">
    <div id="text">{initial}</div>
    <div id="input"></div>
    <div id="sugg"></div>
    <div id="exmeta"></div>
  </section>
  <div id="filterrow">
    <input id="filter" type="text" autocomplete="off" spellcheck="false" autofocus
      placeholder="type to filter the labels (/ first for a label starting with s or u)" aria-label="filter labels">
    <span>chosen: <b id="chosen">—</b></span>
    <span id="mode"></span>
  </div>
  <section id="gen" hidden>
    <label for="response" id="genlabel">Write the response</label>
    <textarea id="response" spellcheck="true" aria-label="response"></textarea>
  </section>
  <div class="actions">
    <button type="button" class="primary" id="b-submit">Submit (Enter)</button>
    <button type="button" id="b-skip">Skip (S)</button>
    <button type="button" id="b-unsure">Unsure (U)</button>
    <button type="button" id="b-undo">Undo (Backspace)</button>
    <span id="undoinfo" class="keys"></span>
  </div>
  <div id="msg" role="status"></div>
  <ol id="matches"></ol>
  <p class="keys" id="keys"><kbd>a–z</kbd> filter · <kbd>1</kbd>–<kbd>9</kbd> pick a shown label · <kbd>↑</kbd><kbd>↓</kbd> move ·
    <kbd>Enter</kbd> submit · <kbd>S</kbd> skip · <kbd>U</kbd> unsure · <kbd>Backspace</kbd> undo your last label ·
    <kbd>/</kbd> filter from s or u · <kbd>Esc</kbd> clear</p>
</main>
<form id="who" hidden>
  <label for="who-name">Who is labeling? (kept in this browser)</label>
  <input id="who-name" maxlength="128" autocomplete="nickname">
  <button type="submit" class="primary">Start</button>
</form>
<script type="application/json" id="alft-boot">{boot}</script>
<script nonce="{nonce}">{js}</script>
</body>
</html>
"""
