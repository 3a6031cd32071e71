"""Shared bits of the Prefect tasks: the step decorator, cache keys, logging to both the UI and the console."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("alft")


def step_cache_key(step: str) -> Callable[[Any, dict[str, Any]], str]:
    """Prefect cache key of a step: campaign incarnation, round, step.

    The campaign uid changes when a campaign is created anew, so a deleted store never
    lets an old cached result through; within one campaign a finished step is served
    from Prefect's persisted result and shows as Cached in the UI.
    """

    def key(_context: Any, parameters: dict[str, Any]) -> str:
        return f"alft-{parameters['ctx'].uid}-r{parameters['round_no']}-{step}"

    return key


def step_task(step: str, label: str):
    """The Prefect ``@task`` of a round step: named ``round N · label``, cached per campaign/round/step.

    The step starts only while the Prefect API answers (``tasks._prefect.require_api``).
    """
    import functools

    from prefect import task

    def deco(fn):
        @functools.wraps(fn)
        def checked(ctx, round_no: int):
            from tasks._prefect import require_api

            require_api(f"round {round_no} · {label}")
            return fn(ctx, round_no)

        checked.__prefect_task_source__ = fn  # the task key hashes the step's own code
        return task(
            name=step,
            task_run_name=f"round {{round_no}} · {label}",
            cache_key_fn=step_cache_key(step),
            persist_result=True,
        )(checked)

    return deco


def say(message: str, *args: Any) -> None:
    """Log to the Prefect run (UI) when inside one, and to the ``alft`` console logger."""
    log.info(message, *args)
    try:
        from prefect.context import TaskRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() is not None:
            get_run_logger().info(message, *args)
    except Exception:  # outside a run (plain .fn calls): the console line is enough
        pass


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None
