"""The campaign's side of talking to the Prefect API: is it there, and what to say when it is not.

A step must not start while the Prefect API is gone: task runs are reported over a
websocket whose events are dropped while the server is down, so a campaign that went on
would leave rounds the UI never shows. ``require_api`` checks the API before every step
(one ``GET /health``, ~5 ms on loopback) with the run's own client, which retries with
backoff, then raises one ``OrchestratorError``. Whatever else fails to reach the API (an artifact, a
state change) is turned into the same kind of line by ``unreachable`` for the CLI.
"""

from __future__ import annotations

import functools
import logging
import re
import time

from pydantic import BaseModel

from alft.errors import OrchestratorError, chain

log = logging.getLogger("alft")

RESUME_HINT = (
    "The campaign store keeps every finished step; run the same command again once the Prefect "
    "server is up, and the campaign resumes where it stopped"
)


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in, or None outside one (plain ``task.fn`` calls)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None


def api_url() -> str:
    """The API this process talks to (the ephemeral server's address when none is configured)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the ephemeral Prefect server"


def short_cause(exc: BaseException) -> str:
    """What went wrong, in a few words for the common cases."""
    import httpx

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) or "Connection refused" in text or "All connection attempts failed" in text:
        return "cannot connect (connection refused: is the server running?)"
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status} from the server"
    return text if len(text) <= 300 else text[:297] + "..."


def unreachable(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain that says the Prefect API is not reachable (or failing), if any."""
    import httpx

    for cur in chain(exc):
        if isinstance(cur, httpx.TransportError):
            return cur
        if isinstance(cur, httpx.HTTPStatusError) and cur.response.status_code >= 500:
            return cur
    return None


def max_retries() -> int:
    """How many times Prefect's client retries a failed request (``PREFECT_CLIENT_MAX_RETRIES``)."""
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    return int(PREFECT_CLIENT_MAX_RETRIES.value())


def require_api(what: str) -> None:
    """Before ``what`` (a step): the Prefect API answers, or OrchestratorError.

    The flow run's own client retries a lost connection with exponential backoff
    (``PREFECT_CLIENT_MAX_RETRIES``, default 5: 2 + 4 + 8 + 16 + 32 s, jittered), the same
    patience every other call of the run gets.
    """
    if flow_run_id() is None:
        return  # plain task calls: no orchestrator to report to
    from prefect.client.orchestration import get_client

    t0 = time.monotonic()
    with get_client(sync_client=True) as client:  # inside a run: the run's connected client
        error = client.api_healthcheck()
    if error is None:
        return
    raise OrchestratorError(
        f"Prefect API at {api_url()}: unreachable before {what} ({1 + max_retries()} tries over "
        f"{time.monotonic() - t0:.0f} s): {short_cause(error)}. {RESUME_HINT}"
    )


def crash_orphans(name: str, orphans: dict[str, str], by: str) -> list[str]:
    """Mark flow runs whose process is gone as Crashed (only those Prefect still shows running).

    A RUNNING flow run left by a killed process would stay RUNNING forever and make the
    scheduled round wait on it. Returns the ids marked.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    marked = []
    with get_client(sync_client=True) as client:
        for fid, why in orphans.items():
            try:
                run = client.read_flow_run(fid)
            except ObjectNotFound:  # deleted meanwhile: nothing to mark
                continue
            if run.state is None or run.state.type.value not in ("RUNNING", "PENDING", "CANCELLING"):
                continue
            client.set_flow_run_state(
                fid,
                Crashed(message=f"alft: no process runs this flow run any more ({why}); campaign {name} was resumed by flow run {by}"),
                force=True,
            )
            marked.append(fid)
    return marked


# --------------------------------------------------------------------------- campaign runs
#: The campaign flow's name. Its runs are found by their ``config`` parameter (``active_runs``),
#: never by their name: a caller may name a run (``run_deployment(..., flow_run_name=...)``).
CAMPAIGN_FLOW = "alft-campaign"


@functools.cache
def _slug_words() -> frozenset[str]:
    """The words Prefect draws a run's random name from (coolname's word lists)."""
    import os

    import coolname
    from coolname.loader import load_config

    conf = load_config(os.path.join(os.path.dirname(coolname.__file__), "data"))
    return frozenset(w for lst in conf.values() if lst.get("type") == "words" for w in lst["words"])


def prefect_made(name: str) -> bool:
    """Whether ``name`` is a random run name of Prefect's (``generate_slug(2)``: ``crimson-otter``),
    that is, one no caller gave: two words of its word lists joined by a hyphen."""
    try:
        words = _slug_words()
    except Exception:  # coolname laid out otherwise: its names' shape
        return re.fullmatch(r"[a-z]+-[a-z]+", name) is not None
    return any(name[:i] in words and name[i + 1 :] in words for i, c in enumerate(name) if c == "-")


def campaign_run_name() -> str:
    """A campaign flow run's name (the flow's ``flow_run_name``): the campaign's, unless the
    caller named the run (a deployment run whose name Prefect did not make up)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    config = ctx.parameters["config"]
    name = config["name"] if isinstance(config, dict) else config.name
    run = ctx.flow_run
    if run is not None and run.deployment_id is not None and run.name and not prefect_made(run.name):
        return run.name
    return name


class ActiveRun(BaseModel):
    """A campaign flow run that is not finished (scheduled, pending, running, paused)."""

    id: str
    state_type: str  # SCHEDULED | PENDING | RUNNING | PAUSED | CANCELLING
    state_name: str


def _campaign_of(parameters: dict) -> str | None:
    config = (parameters or {}).get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def active_runs(name: str, page: int = 200) -> list[ActiveRun]:
    """The unfinished flow runs of campaign ``name``: campaign flow runs whose ``config`` parameter
    names it, whatever each run is called. The API filters by flow and state; the parameter
    is matched here (Prefect's flow-run filter has no parameter field), ``page`` runs a request."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    found = []
    with get_client(sync_client=True) as client:
        for offset in range(0, 1_000_000, page):
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[CAMPAIGN_FLOW])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live))),
                sort=FlowRunSort.ID_DESC,
                limit=page,
                offset=offset,
            )
            found += [r for r in runs if r.state is not None and _campaign_of(r.parameters) == name]
            if len(runs) < page:
                break
    return [ActiveRun(id=str(r.id), state_type=r.state.type.value, state_name=r.state.name) for r in found]
