"""The temporary Prefect server of `alft run`: it dies with the run, even a SIGKILLed one, and
sends no telemetry unless the user asks for it. Real `alft run` processes and real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, campaign_yaml

pytestmark = pytest.mark.slow


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, ...), or None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and (s := _stat(int(d))) and int(s[1]) == pid]


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _alive(pid: int, started: str) -> bool:
    """The very process (same start time: field 22) still runs; a zombie has ended."""
    s = _stat(pid)
    return s is not None and s[19] == started and s[0] != "Z"


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = fh.read().decode(errors="replace").split("\0")
    return dict(kv.split("=", 1) for kv in items if "=" in kv)


def _server_of(run: subprocess.Popen, log: Path, timeout: float = 240.0) -> tuple[int, int]:
    """(pid, port) of the run's Prefect server once its API answers."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.poll() is not None:
            raise AssertionError(f"alft run exited ({run.returncode}) before its server was up:\n{log.read_text()}")
        for pid in _descendants(run.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "--port" in cmd and "prefect.server.api.server:create_app" in cmd:
                port = int(cmd[cmd.index("--port") + 1])
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                        return pid, port
                except httpx.HTTPError:
                    pass
        time.sleep(0.2)
    raise AssertionError(f"no Prefect server of alft run answered within {timeout:.0f} s:\n{log.read_text()}")


def _start_run(tmp_path: Path, files, model, **env_over) -> tuple[subprocess.Popen, Path]:
    cfg = campaign_yaml(tmp_path, files, model)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "COLUMNS"))}
    for key in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):  # what alft sets unless the user did
        env.pop(key, None)
    # these tests are about the temporary server: never reuse one found on the machine
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), ALFT_PREFECT_REUSE="0")
    env.update(env_over)
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        run = subprocess.Popen([sys.executable, "-m", "alft.cli", "run", str(cfg)], cwd=REPO, env=env,
                               stdout=fh, stderr=subprocess.STDOUT)
    return run, log


def test_sigkill_of_alft_run_takes_its_prefect_server_with_it(tmp_path, banking_subset, tiny_model):
    import httpx

    run, log = _start_run(tmp_path, banking_subset, tiny_model)
    survivors: dict[int, str] = {}
    try:
        server, port = _server_of(run, log)
        assert _stat(server)[1] == str(run.pid)  # the run's own child
        group = {pid: _stat(pid)[19] for pid in [server, *_descendants(server)]}
        survivors = dict(group)
        env = _environ(server)  # offline by default: no telemetry from the server alft started
        assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() == "false" and env.get("DO_NOT_TRACK") == "1"

        run.send_signal(signal.SIGKILL)
        run.wait(30)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0 and any(_alive(p, s) for p, s in group.items()):
            time.sleep(0.02)
        gone_after = time.monotonic() - t0
        survivors = {p: s for p, s in group.items() if _alive(p, s)}
        assert survivors == {}, f"still running {gone_after:.1f} s after the SIGKILL: {survivors}"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
        for pid, started in survivors.items():  # never leave a server behind, even when the test fails
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


_LIBRARY = (
    "import time\n"
    "from alft.cli.prefect_server import start_temporary_server\n"
    "print(start_temporary_server(), flush=True)\n"
    "time.sleep(600)\n"
)


def _library_server(tmp_path: Path, **env_over) -> tuple[subprocess.Popen, int]:
    """A process that starts alft's temporary server without the CLI's environment defaults; (it, server pid)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_API_") and k not in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), **env_over)
    with open(tmp_path / "server.log", "wb") as log:  # the server's own output goes there too
        proc = subprocess.Popen([sys.executable, "-c", _LIBRARY], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=log, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api"), url
    (server,) = _children(proc.pid)
    return proc, server


def test_the_temporary_server_of_library_code_has_telemetry_off_and_dies_with_it(tmp_path):
    """`start_temporary_server` sets the defaults itself (not only the CLI's environment)."""
    proc, server = _library_server(tmp_path)
    started = _stat(server)[19]
    try:
        env = _environ(server)
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
        proc.kill()
        proc.wait(30)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0 and _alive(server, started):
            time.sleep(0.02)
        assert not _alive(server, started)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if _alive(server, started):
            os.kill(server, signal.SIGKILL)


def test_the_users_telemetry_choice_wins(tmp_path):
    proc, server = _library_server(tmp_path, PREFECT_SERVER_ANALYTICS_ENABLED="true", DO_NOT_TRACK="0")
    started = _stat(server)[19]
    try:
        env = _environ(server)
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"].lower() == "true" and env["DO_NOT_TRACK"] == "0"
    finally:
        proc.kill()
        proc.wait(30)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0 and _alive(server, started):
            time.sleep(0.02)
        if _alive(server, started):
            os.kill(server, signal.SIGKILL)


# --------------------------------------------------------------------------- reuse
def test_alft_run_reuses_a_prefect_server_that_is_already_running(tmp_path, banking_subset, tiny_model, prefect_server):
    import httpx

    run, log = _start_run(tmp_path, banking_subset, tiny_model, ALFT_PREFECT_REUSE="1", ALFT_PREFECT_LOCAL_URL=prefect_server)
    try:
        assert run.wait(600) == 0, log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    out = log.read_text()
    assert f"using the server already running at {prefect_server}" in out, out
    # the campaign's flow run is in that server, and completed
    runs = httpx.post(f"{prefect_server}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
    mine = [r for r in runs if (r.get("parameters") or {}).get("config", {}).get("name") == "test-campaign"
            and r["state_type"] == "COMPLETED"]
    assert mine, [(r["name"], r["state_type"]) for r in runs]


class _FakeApi:
    """A local HTTP server answering /api/health and /api/admin/version like Prefect would."""

    def __init__(self, version: str, healthy: bool = True):
        import http.server
        import json
        import threading

        body = {"/api/health": json.dumps(healthy), "/api/admin/version": json.dumps(version)}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                data = body.get(self.path)
                self.send_response(200 if data else 404)
                self.end_headers()
                self.wfile.write((data or "").encode())

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def reuse_env(monkeypatch, tmp_path):
    from alft.cli import prefect_server as ps

    for key in ("PREFECT_API_URL", "ALFT_PREFECT_REUSE", "ALFT_PREFECT_LOCAL_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ps, "_prefect_imported", lambda: False)  # as in a fresh `alft run` process
    return ps


def test_reuse_takes_a_server_of_the_same_minor_version_only(reuse_env, monkeypatch):
    import os
    from importlib.metadata import version

    mine = version("prefect")
    same, other = _FakeApi(mine), _FakeApi("2.20.0")
    try:
        monkeypatch.setenv("ALFT_PREFECT_LOCAL_URL", other.url)
        assert reuse_env.reuse_local_server() == (None, f"the Prefect server at {other.url} runs 2.20.0, this client {mine}")
        assert "PREFECT_API_URL" not in os.environ
        monkeypatch.setenv("ALFT_PREFECT_LOCAL_URL", same.url)
        assert reuse_env.reuse_local_server() == (same.url, f"Prefect server {mine} already running")
        assert os.environ["PREFECT_API_URL"] == same.url
        # set now: nothing more to decide
        assert reuse_env.reuse_local_server() == (None, "PREFECT_API_URL is set")
    finally:
        same.close()
        other.close()


def test_reuse_is_off_when_asked_when_nothing_answers_or_when_a_profile_names_a_server(reuse_env, monkeypatch, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    monkeypatch.setenv("ALFT_PREFECT_LOCAL_URL", closed)
    assert reuse_env.reuse_local_server() == (None, f"no Prefect server at {closed}")
    unhealthy = _FakeApi("3.9.1", healthy=False)
    try:
        assert reuse_env.local_server(unhealthy.url) is None
    finally:
        unhealthy.close()
    monkeypatch.setenv("ALFT_PREFECT_REUSE", "0")
    assert reuse_env.reuse_local_server() == (None, "ALFT_PREFECT_REUSE=0")
    monkeypatch.delenv("ALFT_PREFECT_REUSE")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "profiles.toml").write_text('[profiles.work]\nPREFECT_API_URL = "http://server:4200/api"\n')
    assert reuse_env.reuse_local_server() == (None, "Prefect's settings are already chosen")
