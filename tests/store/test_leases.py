"""Run leases (``alft.leases``): one live process per campaign; crashed holders are found.

Liveness is judged on real processes (a child that sleeps, one that was killed), the
heartbeat on a real thread, and the race of two processes starting at once on real
SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest

from alft.store import leases
from alft.errors import CampaignBusyError
from alft.store.campaign_store import CampaignStore
from alft.store.schema import utcnow
from tasks._prefect import ActiveRun
from tasks.scheduling import decide


def make_campaign(st: CampaignStore, name: str = "c") -> None:
    with st.transaction() as conn:
        st.create_campaign(
            conn, name=name, uid=f"u-{name}", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )


@pytest.fixture
def store(tmp_path):
    st = CampaignStore(f"sqlite:///{tmp_path / 'campaign.db'}")
    make_campaign(st)
    yield st
    st.close()


@pytest.fixture
def sleeper():
    """A live process on this host (not this one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    """The pid of a process that ran here and is gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def put_lease(st: CampaignStore, fid: str, host: str, pid: int, pid_start: str | None, beat_age_s: float = 0.0) -> None:
    """A lease row as another process would have written it."""
    with st.transaction() as conn:
        st.hold_lease(conn, "c", fid, host, pid, pid_start)
    if beat_age_s:
        from alft.store.schema import run_leases

        with st.transaction() as conn:
            conn.execute(
                run_leases.update()
                .where(run_leases.c.flow_run_id == fid)
                .values(heartbeat_at=utcnow() - dt.timedelta(seconds=beat_age_s))
            )


# ------------------------------------------------------------------------------- judging
def row(host: str, pid: int, pid_start: str | None, beat_age_s: float = 0.0) -> dict:
    return {"host": host, "pid": pid, "pid_start": pid_start, "heartbeat_at": utcnow() - dt.timedelta(seconds=beat_age_s)}


def test_a_running_process_on_this_host_is_alive(sleeper):
    me = leases.this_process()
    start = leases.process_start(sleeper.pid)
    alive, why = leases.judge(row(me.host, sleeper.pid, start), me, utcnow(), 120)
    assert alive and why == f"process {sleeper.pid} on {me.host} is running"


def test_a_killed_process_is_gone_at_once_even_before_it_is_reaped():
    me = leases.this_process()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    start = leases.process_start(proc.pid)
    assert start
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)  # a zombie now: killed, not reaped
    alive, why = leases.judge(row(me.host, proc.pid, start), me, utcnow(), 120)
    assert not alive and why == f"process {proc.pid} on {me.host} is gone"
    proc.wait()
    assert leases.process_start(proc.pid) is None


def test_a_reused_pid_is_another_process(sleeper):
    me = leases.this_process()
    alive, why = leases.judge(row(me.host, sleeper.pid, "another-boot:12345"), me, utcnow(), 120)
    assert not alive and "the pid now belongs to another process" in why


def test_this_process_holding_an_older_lease_means_that_run_ended():
    me = leases.this_process()
    alive, why = leases.judge(row(me.host, me.pid, me.pid_start), me, utcnow(), 120)
    assert not alive and "is this process" in why


def test_another_host_is_judged_by_its_heartbeat():
    me = leases.this_process()
    alive, why = leases.judge(row("elsewhere", 1, "b:1", beat_age_s=30), me, utcnow(), 120)
    assert alive and why == "process 1 on elsewhere sent a heartbeat 30 s ago"
    alive, why = leases.judge(row("elsewhere", 1, "b:1", beat_age_s=300), me, utcnow(), 120)
    assert not alive and why == "process 1 on elsewhere sent no heartbeat for 300 s (limit 120 s)"


def test_process_start_reads_the_start_tick_and_boot():
    start = leases.process_start(os.getpid())
    boot, tick = start.rsplit(":", 1)
    assert boot == open("/proc/sys/kernel/random/boot_id").read().strip() and int(tick) > 0
    assert leases.process_start(dead_pid()) is None


# ------------------------------------------------------------------------------- acquiring
def test_a_live_holder_refuses_a_second_run_and_nothing_changes(store, sleeper):
    me = leases.this_process()
    put_lease(store, "run-a", me.host, sleeper.pid, leases.process_start(sleeper.pid))
    before = store.leases("c", live_only=False)
    with pytest.raises(CampaignBusyError) as err:
        leases.acquire(store, "c", "run-b")
    msg = str(err.value)
    assert msg.startswith("campaign c is already being run by flow run run-a (started ")
    assert f"process {sleeper.pid} on {me.host} is running" in msg
    assert "after 120 s without a heartbeat" in msg
    assert store.leases("c", live_only=False) == before


def test_a_crashed_holder_is_taken_over_and_its_row_says_why(store):
    me = leases.this_process()
    gone = dead_pid()
    put_lease(store, "run-a", me.host, gone, "b:1")
    taken = leases.acquire(store, "c", "run-b")
    try:
        assert taken == [leases.Superseded("run-a", f"process {gone} on {me.host} is gone")]
        rows = {r["flow_run_id"]: r for r in store.leases("c", live_only=False)}
        assert rows["run-a"]["ended_at"] is not None
        assert rows["run-a"]["end_reason"] == f"taken over by run-b: process {gone} on {me.host} is gone"
        assert rows["run-b"]["ended_at"] is None and rows["run-b"]["pid"] == os.getpid()
    finally:
        leases.release(store, "c", "run-b", "completed")


def test_a_stale_holder_on_another_host_is_taken_over(store, monkeypatch):
    monkeypatch.setenv("ALFT_LEASE_STALE_S", "60")
    put_lease(store, "run-a", "elsewhere", 1, None, beat_age_s=30)
    with pytest.raises(CampaignBusyError, match="after 60 s without a heartbeat from another host"):
        leases.acquire(store, "c", "run-b")
    put_lease(store, "run-a", "elsewhere", 1, None, beat_age_s=61)
    assert [s.flow_run_id for s in leases.acquire(store, "c", "run-b")] == ["run-a"]
    leases.release(store, "c", "run-b", "completed")


def test_a_resumed_flow_run_holds_its_own_row_again(store):
    assert leases.acquire(store, "c", "run-a") == []
    leases.release(store, "c", "run-a", "suspended (waiting for labels)")
    assert store.leases("c") == []
    assert leases.acquire(store, "c", "run-a") == []  # the same flow run in a new process
    (held,) = store.leases("c")
    assert held["flow_run_id"] == "run-a" and held["end_reason"] is None
    leases.release(store, "c", "run-a", "completed")
    leases.release(store, "c", "run-a", "completed again")  # idempotent: the first reason stays
    (ended,) = store.leases("c", live_only=False)
    assert ended["end_reason"] == "completed"


def test_the_heartbeat_thread_refreshes_what_this_process_holds(store, monkeypatch):
    monkeypatch.setenv("ALFT_LEASE_HEARTBEAT_S", "0.2")
    leases._HEART.stop()  # the next acquire starts it again with the short interval
    leases.acquire(store, "c", "run-a")
    try:
        first = store.leases("c")[0]["heartbeat_at"]
        deadline = time.monotonic() + 10
        while store.leases("c")[0]["heartbeat_at"] == first:
            assert time.monotonic() < deadline, "no heartbeat in 10 s"
            time.sleep(0.1)
    finally:
        leases.release(store, "c", "run-a", "completed")
    ended = store.leases("c", live_only=False)[0]["heartbeat_at"]
    time.sleep(0.5)
    assert store.leases("c", live_only=False)[0]["heartbeat_at"] == ended  # released: no more beats


def test_bad_heartbeat_settings_fall_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("ALFT_LEASE_HEARTBEAT_S", "-3")
    assert leases.heartbeat_s() == leases.DEFAULT_HEARTBEAT_S
    assert "ALFT_LEASE_HEARTBEAT_S='-3' is not a number of seconds" in caplog.text
    monkeypatch.setenv("ALFT_LEASE_STALE_S", "soon")
    assert leases.stale_s() == leases.DEFAULT_STALE_S


def _race(url: str, fid: str, start_at: float, out, done) -> None:
    st = CampaignStore(url)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        leases.acquire(st, "c", fid)
        out.put((fid, "held"))
        # Stay alive until the other one has decided: on a loaded machine it may start late,
        # and a holder that had exited would (rightly) be taken over.
        done.wait(60)
    except CampaignBusyError as exc:
        out.put((fid, str(exc)))


def race(url: str) -> list[tuple[str, str]]:
    ctx = mp.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    start_at = time.time() + 3.0  # both processes imported and connected by then, mostly
    procs = [ctx.Process(target=_race, args=(url, f"run-{i}", start_at, out, done)) for i in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    done.set()
    for p in procs:
        p.join(30)
    return results


def test_two_processes_starting_at_once_one_wins_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    st = CampaignStore(url)
    make_campaign(st)
    results = race(url)
    held = [fid for fid, r in results if r == "held"]
    busy = [r for _, r in results if r != "held"]
    assert len(held) == 1 and len(busy) == 1, results
    assert busy[0].startswith(f"campaign c is already being run by flow run {held[0]} ")
    st.close()


def test_two_processes_starting_at_once_one_wins_on_postgres(postgres_url):
    from tests.store.test_store_postgres import new_database

    url = new_database(postgres_url)
    st = CampaignStore(url)
    make_campaign(st)
    results = race(url)
    assert sorted(r == "held" for _, r in results) == [False, True], results
    st.close()


# ------------------------------------------------------------------------------- orphans
def test_orphaned_flow_runs_are_those_whose_process_is_gone(store, sleeper):
    me = leases.this_process()
    put_lease(store, "ended", me.host, me.pid, me.pid_start)
    with store.transaction() as conn:
        store.end_lease(conn, "c", "ended", "failed: OrchestratorError")
    put_lease(store, "killed", me.host, dead_pid(), "b:1")
    put_lease(store, "alive", me.host, sleeper.pid, leases.process_start(sleeper.pid))
    found = leases.orphaned(store, "c", ["ended", "killed", "alive", "never-held"])
    assert found["ended"] == "its process ended (failed: OrchestratorError)"
    assert found["killed"].endswith(" is gone")
    assert set(found) == {"ended", "killed"}  # alive runs, and runs that never held it, are left alone


def scheduled_config(tmp_path, store_url: str):
    from alft.config import CampaignConfig

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "text": "x", "label": "x"}\n')
    return CampaignConfig.model_validate(
        {
            "name": "c", "budget": 10, "initial_size": 1, "batch_size": 1,
            "workdir": str(tmp_path / "work"), "store": {"url": store_url},
            "data": {"pool": {"path": str(pool)}, "labels": ["x", "y"]},
            "model": {"path": str(tmp_path)},
        }
    )


def test_the_scheduled_round_does_not_wait_on_a_run_whose_process_is_gone(store, tmp_path, sleeper):
    """A RUNNING flow run left by a dead process used to block every scheduled round."""
    cfg = scheduled_config(tmp_path, store.url)
    me = leases.this_process()
    running = [ActiveRun(id="run-a", state_type="RUNNING", state_name="Running")]
    put_lease(store, "run-a", me.host, sleeper.pid, leases.process_start(sleeper.pid))
    plan = decide(cfg, running)
    assert plan.action == "nothing" and plan.reason == "flow run run-a of campaign c is Running: it carries the campaign on"
    gone = dead_pid()
    put_lease(store, "run-a", me.host, gone, "b:1")
    plan = decide(cfg, running)
    assert plan.action == "continued"
    assert plan.reason.endswith(f"(flow run run-a: process {gone} on {me.host} is gone)")


def test_status_says_who_runs_the_campaign(store, sleeper):
    me = leases.this_process()
    assert leases.describe(store, "c") == "not running"
    put_lease(store, "run-a", me.host, sleeper.pid, leases.process_start(sleeper.pid))
    line = leases.describe(store, "c")
    assert line.startswith("running: flow run run-a since ") and line.endswith(f"UTC (process {sleeper.pid} on {me.host} is running)")
    gone = dead_pid()
    put_lease(store, "run-a", me.host, gone, "b:1")
    assert leases.describe(store, "c") == (
        f"not running: flow run run-a holds it but process {gone} on {me.host} is gone; the next run takes over"
    )
    with store.transaction() as conn:
        store.end_lease(conn, "c", "run-a", "completed")
    line = leases.describe(store, "c")
    assert line.startswith("not running: last flow run run-a, completed at ") and line.endswith(" UTC")
