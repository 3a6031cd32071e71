"""What the CLI says when the Prefect API goes away (``tasks._prefect``, ``alft.cli``).

The end-to-end case (a real server stopped mid-round) is
``tests/flows/test_faults.py::test_prefect_server_going_away_mid_round``; here the error
chains the flow engine produces are built from real httpx exceptions.
"""

from __future__ import annotations

import httpx
import pytest

from alft.cli.app import _orchestrator_failure
from alft.errors import OrchestratorError, StoreError
from tasks._prefect import RESUME_HINT, require_api, short_cause, unreachable

REQUEST = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/x/set_state")


def raised(exc: BaseException, during: BaseException | None = None) -> BaseException:
    """``exc`` chained as Python chains an exception raised while handling ``during``."""
    exc.__context__ = during
    return exc


def test_a_step_check_error_is_found_under_the_engines_own_connection_error():
    step = OrchestratorError("Prefect API at X: unreachable before round 2 · select (6 tries over 62 s): ...")
    top = raised(httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), during=step)
    assert _orchestrator_failure(top) is step


def test_a_lost_connection_elsewhere_becomes_one_orchestrator_error(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        err = _orchestrator_failure(raised(httpx.ConnectError("All connection attempts failed", request=REQUEST)))
    assert isinstance(err, OrchestratorError)
    assert str(err) == (
        "Prefect API at http://127.0.0.1:4200/api: cannot connect (connection refused: is the server running?). "
        + RESUME_HINT
    )


def test_other_failures_are_not_turned_into_an_orchestrator_error():
    assert _orchestrator_failure(raised(ValueError("a bug"))) is None
    # an alft error on its own is the CLI's ordinary path, not this one
    assert _orchestrator_failure(raised(StoreError("disk full"))) is None
    # a 4xx is a refused call, not a lost server
    bad = httpx.HTTPStatusError("409", request=REQUEST, response=httpx.Response(409, request=REQUEST))
    assert unreachable(raised(bad)) is None


def test_a_server_error_counts_as_unreachable_and_says_its_status():
    down = httpx.HTTPStatusError("503", request=REQUEST, response=httpx.Response(503, request=REQUEST))
    assert unreachable(raised(down)) is down
    assert short_cause(down) == "HTTP 503 from the server"


@pytest.mark.parametrize(
    "exc, says",
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect (connection refused: is the server running?)"),
        (httpx.ReadTimeout("timed out"), "the server did not answer in time"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."),
         "Server disconnected without sending a response."),
    ],
)
def test_short_causes(exc, says):
    assert unreachable(exc) is exc
    assert short_cause(exc) == says


def test_outside_a_flow_run_there_is_nothing_to_check():
    require_api("round 0 · embed")  # plain task calls: no API, no error
