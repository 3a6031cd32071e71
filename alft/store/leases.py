"""Which process runs a campaign: one live holder at a time, and crashed holders found.

A campaign run (a Prefect flow run, or plain task calls) holds a *lease*: a ``run_leases``
row naming its flow run, host, pid and the pid's start time, refreshed by a heartbeat
thread. A second run of the same campaign checks the rows not ended:

* the holder is this very process (an earlier flow run in it): it ended, take over;
* same host: the pid still runs with the same start time -> the holder is alive, refuse
  (``CampaignBusyError``); the pid is gone (SIGKILL, power loss, a lost Prefect API) or was
  reused by another process -> the holder crashed, take over;
* another host: a heartbeat younger than the stale limit -> alive, refuse; older -> crashed.

Taking over ends the old row (``end_reason`` says why) in the same transaction that writes
the new one, so two runs starting at once cannot both win. The caller reports the crashed
flow runs it superseded, so the orchestrator can mark them (``tasks.campaign``): a flow run
left RUNNING by a dead process would otherwise block scheduled rounds forever.

A lease is released when the flow ends (completed, failed or suspended: the flow's
``finally``), and as a backstop when the process exits. Nothing here imports Prefect.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alft.errors import CampaignBusyError
from alft.store.schema import utcnow

if TYPE_CHECKING:
    from alft.store.campaign_store import CampaignStore

log = logging.getLogger("alft")

DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_STALE_S = 120.0


def _seconds(var: str, default: float) -> float:
    raw = os.environ.get(var)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        log.warning("%s=%r is not a number of seconds in (0, 86400); using %s", var, raw, default)
        return default
    return value


def heartbeat_s() -> float:
    """Seconds between heartbeats: ``$ALFT_LEASE_HEARTBEAT_S`` (30)."""
    return _seconds("ALFT_LEASE_HEARTBEAT_S", DEFAULT_HEARTBEAT_S)


def stale_s() -> float:
    """A holder on another host without a heartbeat this long is gone: ``$ALFT_LEASE_STALE_S`` (120)."""
    return _seconds("ALFT_LEASE_STALE_S", DEFAULT_STALE_S)


@dataclass(frozen=True)
class Holder:
    """A process: where it runs and which one it is (pid plus start time, so reuse is seen)."""

    host: str
    pid: int
    pid_start: str | None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """``"<boot id>:<start tick>"`` of a running process, ``""`` where /proc is missing, None if it is gone.

    A zombie (killed, not yet reaped) is gone: it runs no code.
    """
    if not os.path.isdir("/proc/self"):  # no procfs (macOS): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # another user's process: it exists
        return ""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: fields after the last ")" are fixed
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def this_process() -> Holder:
    pid = os.getpid()
    return Holder(host=socket.gethostname(), pid=pid, pid_start=process_start(pid) or None)


def judge(row: dict, me: Holder, now: dt.datetime, stale_after: float) -> tuple[bool, str]:
    """Is the holder of lease ``row`` alive, as seen from process ``me``? And why (for messages)."""
    host, pid = row["host"], int(row["pid"])
    where = f"process {pid} on {host}"
    if host == me.host and pid == me.pid and row["pid_start"] == me.pid_start:
        return False, f"{where} is this process (an earlier run in it ended)"
    if host == me.host:
        start = process_start(pid)
        if start is None:
            return False, f"{where} is gone"
        if row["pid_start"] and start and start != row["pid_start"]:
            return False, f"{where} is gone (the pid now belongs to another process)"
        return True, f"{where} is running"
    beat = row["heartbeat_at"]
    if beat.tzinfo is None:  # SQLite returns naive UTC
        beat = beat.replace(tzinfo=dt.timezone.utc)
    age = (now - beat).total_seconds()
    if age > stale_after:
        return False, f"{where} sent no heartbeat for {age:.0f} s (limit {stale_after:.0f} s)"
    return True, f"{where} sent a heartbeat {max(age, 0):.0f} s ago"


@dataclass(frozen=True)
class Superseded:
    """A lease taken over from a holder that is gone."""

    flow_run_id: str
    why: str


def _busy_message(name: str, row: dict, why: str, stale: float) -> str:
    started = row["started_at"].strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"campaign {name} is already being run by flow run {row['flow_run_id']} "
        f"(started {started} UTC; {why}): two runs of one campaign would do the same work "
        "twice. Wait for it to end or stop it; a run whose process is gone is taken over "
        f"by the next one (at once on the same host, after {stale:.0f} s without a heartbeat "
        "from another host)"
    )


def check_free(store: CampaignStore, name: str) -> None:
    """Raise ``CampaignBusyError`` if a live process holds the campaign (reads only: a preflight;
    ``acquire`` decides for real, under the campaign lock)."""
    me, now, stale = this_process(), utcnow(), stale_s()
    for row in store.leases(name):
        alive, why = judge(row, me, now, stale)
        if alive:
            raise CampaignBusyError(_busy_message(name, row, why, stale))


def acquire(store: CampaignStore, name: str, flow_run_id: str) -> list[Superseded]:
    """Make this process the holder of campaign ``name`` for ``flow_run_id``.

    Raises ``CampaignBusyError`` when another live process holds it. Returns the leases of
    crashed holders it ended (their flow runs are left RUNNING wherever they were recorded).
    """
    me = this_process()
    superseded: list[Superseded] = []
    stale = stale_s()
    with store.transaction() as conn:
        store.lock_campaign(conn, name)
        now = utcnow()
        for row in store.leases(name, conn):
            if row["flow_run_id"] == flow_run_id:
                continue  # the same flow run again (a suspended run resumed): re-held below
            alive, why = judge(row, me, now, stale)
            if alive:
                raise CampaignBusyError(_busy_message(name, row, why, stale))
            store.end_lease(conn, name, row["flow_run_id"], f"taken over by {flow_run_id}: {why}")
            superseded.append(Superseded(row["flow_run_id"], why))
        store.hold_lease(conn, name, flow_run_id, me.host, me.pid, me.pid_start)
    _HEART.add(store, name, flow_run_id)
    return superseded


def orphaned(store: CampaignStore, name: str, flow_run_ids: list[str]) -> dict[str, str]:
    """Which of these flow runs (that an orchestrator still shows running) have no process.

    A flow run is orphaned when its lease ended (its process exited, e.g. after losing the
    Prefect API, without being able to say so) or its holder is judged gone. A flow run
    without a lease row is not judged: it may not have reached ``acquire`` yet.
    Returns flow run id -> why.
    """
    rows = {r["flow_run_id"]: r for r in store.leases(name, live_only=False)}
    me, now, stale = this_process(), utcnow(), stale_s()
    out: dict[str, str] = {}
    for fid in flow_run_ids:
        row = rows.get(fid)
        if row is None:
            continue
        if row["ended_at"] is not None:
            out[fid] = f"its process ended ({row['end_reason']})"
            continue
        alive, why = judge(row, me, now, stale)
        if not alive:
            out[fid] = why
    return out


def describe(store: CampaignStore, name: str) -> str:
    """One line for ``alft status``: who runs the campaign now, or who ran it last."""
    me, now, stale = this_process(), utcnow(), stale_s()
    live = store.leases(name)
    if live:
        row = live[-1]
        alive, why = judge(row, me, now, stale)
        started = row["started_at"].strftime("%Y-%m-%d %H:%M:%S")
        if alive:
            return f"running: flow run {row['flow_run_id']} since {started} UTC ({why})"
        return f"not running: flow run {row['flow_run_id']} holds it but {why}; the next run takes over"
    rows = store.leases(name, live_only=False)
    if not rows:
        return "not running"
    last = max(rows, key=lambda r: r["ended_at"])
    ended = last["ended_at"].strftime("%Y-%m-%d %H:%M:%S")
    return f"not running: last flow run {last['flow_run_id']}, {last['end_reason']} at {ended} UTC"


def release(store: CampaignStore, name: str, flow_run_id: str, reason: str, quiet: bool = False) -> None:
    """End this process's lease (idempotent). A store that refuses the write only loses the
    lease row's end: the next run finds the process gone and takes over."""
    _HEART.discard(store, name, flow_run_id)
    try:
        with store.transaction() as conn:
            store.end_lease(conn, name, flow_run_id, reason)
    except Exception as exc:  # never mask the flow's own outcome
        (log.debug if quiet else log.warning)("campaign %s: could not end the run lease of %s: %s", name, flow_run_id, exc)


class _Heart:
    """One daemon thread per process refreshing every lease it holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[tuple[str, str, str], CampaignStore] = {}
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.failed_once = False

    def add(self, store: CampaignStore, name: str, flow_run_id: str) -> None:
        with self.lock:
            self.held[(store.url, name, flow_run_id)] = store
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="alft-lease-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, store: CampaignStore, name: str, flow_run_id: str) -> None:
        with self.lock:
            self.held.pop((store.url, name, flow_run_id), None)

    def snapshot(self) -> list[tuple[CampaignStore, str, str]]:
        with self.lock:
            return [(store, name, fid) for (_, name, fid), store in self.held.items()]

    def _run(self) -> None:
        while not self.wake.wait(heartbeat_s()):
            by_store: dict[str, tuple[CampaignStore, list[tuple[str, str]]]] = {}
            for store, name, fid in self.snapshot():
                by_store.setdefault(store.url, (store, []))[1].append((name, fid))
            for store, held in by_store.values():
                try:
                    store.beat(held)
                except Exception as exc:  # a full disk must not kill the run: the next beat retries
                    if not self.failed_once:
                        log.warning("run lease heartbeat failed (retrying every %.0f s): %s", heartbeat_s(), exc)
                        self.failed_once = True

    def stop(self) -> None:
        """End the thread (the next ``add`` starts a new one, reading the interval afresh)."""
        thread = self.thread
        self.wake.set()
        if thread is not None:
            thread.join(5)
        self.wake.clear()
        self.thread = None

    def release_all(self) -> None:
        for store, name, fid in self.snapshot():
            release(store, name, fid, "process exited", quiet=True)  # a backstop: the flow released it


_HEART = _Heart()
atexit.register(_HEART.release_all)
