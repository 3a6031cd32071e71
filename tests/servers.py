"""Real servers for tests: ``prefect server start`` and ``mlflow server`` as subprocesses.

Each runs in its own process group, so stopping it stops the workers it forked too, on a
free port, with its database and log in a test folder. A stopped server can be started
again: a new process on the same port and database, as a restarted deployment would be.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free now (another process may take it before the server binds it: rare, accepted)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server command, its health URL and its log (appended to across restarts)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], health: str, log: Path, url: str) -> None:
        self.name, self.argv, self.env, self.health, self.log, self.url = name, argv, env, health, log, url
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def launch(self) -> None:
        """Start the process; ``wait_ready`` waits for it (servers launched together boot side by side)."""
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started, self.ready_s = time.monotonic(), None

    def start(self, timeout: float = 180.0) -> float:
        """Launch and wait until healthy; the seconds that took."""
        self.launch()
        wait_ready([self], timeout)
        return self.ready_s

    def poll_ready(self) -> bool:
        import httpx

        if self.ready_s is not None:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
        try:
            ok = httpx.get(self.health, timeout=2).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            self.ready_s = time.monotonic() - self.started
        return ok

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the whole group (idempotent)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # workers the server forked may outlive their parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


def wait_ready(servers: list[Server], timeout: float = 180.0) -> None:
    """Until every server's health URL answers 200."""
    deadline = time.monotonic() + timeout
    while not all(s.poll_ready() for s in servers):
        if time.monotonic() > deadline:
            names = ", ".join(s.name for s in servers)
            raise RuntimeError(f"{names}: not healthy after {timeout:.0f} s:\n" + "\n".join(s.tail() for s in servers))
        time.sleep(0.25)


def _env(drop: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def prefect_server_process(folder: Path, port: int | None = None) -> Server:
    """``prefect server start`` with its home (and SQLite database) in ``folder``; not launched yet."""
    port = port or free_port()
    env = {**_env(("PREFECT_API_",)), "PREFECT_HOME": str(folder / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    api = f"http://127.0.0.1:{port}/api"
    argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return Server("prefect server", argv, env, f"{api}/health", folder / "prefect.log", api)


def mlflow_server_process(folder: Path, port: int | None = None) -> Server:
    """``mlflow server`` on SQLite with its artifacts in ``folder``; not launched yet."""
    port = port or free_port()
    env = {**_env(("MLFLOW_TRACKING_",)), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    return Server("mlflow server", argv, env, f"{url}/health", folder / "mlflow.log", url)
