"""Real servers for tests: ``prefect server start`` and ``mlflow server`` as subprocesses,
and a throwaway PostgreSQL cluster (``postgres_cluster``).

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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


# --------------------------------------------------------------------------- PostgreSQL
POSTGRES_APT_PACKAGE = "postgresql"


def postgres_binaries(debian_root: Path = Path("/usr/lib/postgresql"), path: str | None = None) -> dict[str, Path]:
    """initdb and pg_ctl: Debian's newest <debian_root>/<major>/bin, else from ``path`` ($PATH)."""
    import shutil

    def major(p: Path) -> int:
        name = p.parent.parent.name
        return int(name) if name.isdigit() else -1

    dirs = [p.parent for p in sorted(debian_root.glob("*/bin/pg_ctl"), key=major, reverse=True)]
    for d in dirs:
        if (d / "initdb").exists():
            return {"initdb": d / "initdb", "pg_ctl": d / "pg_ctl"}
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if initdb and pg_ctl:
        return {"initdb": Path(initdb), "pg_ctl": Path(pg_ctl)}
    raise RuntimeError(
        "the PostgreSQL tests need a real server, but initdb and pg_ctl were not found (looked in "
        f"{debian_root}/*/bin and $PATH): install Debian's "
        f"'{POSTGRES_APT_PACKAGE}' package (apt-get install -y {POSTGRES_APT_PACKAGE}); "
        "`make test` and .ci/run install it when it is missing"
    )


@contextmanager
def postgres_cluster(durable: bool = False) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's server binaries) while the block runs, as a URL.

    initdb in a fresh temporary folder, trust authentication, a Unix socket in that folder
    only (no TCP port, so parallel sessions never collide). ``durable`` False (tests): fsync,
    synchronous commit and full-page writes off; True (benchmarks): the server's defaults, a
    commit on disk before it returns, as SQLite's ``synchronous=FULL``. initdb refuses to run
    as root: as root the cluster belongs to the ``postgres`` system user (made by the Debian
    package), else to ``nobody``. Yields the superuser's URL of the ``postgres`` database
    (psycopg 3).
    """
    import pwd
    import shutil

    bins = postgres_binaries()
    run_as: dict = {}
    base = Path(tempfile.mkdtemp(prefix="alft-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = pwd.getpwnam("nobody")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    data, log = base / "data", base / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")

    def pg(*args: str) -> None:
        res = subprocess.run(
            [str(a) for a in args], cwd=base, env=env, capture_output=True, text=True, timeout=120, **run_as
        )
        if res.returncode != 0:
            server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(map(str, args[:2]))} failed ({res.returncode}): {res.stdout}{res.stderr}{server_log}"
            )

    pg(bins["initdb"], "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
    with open(data / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(
            "\n# alft test cluster\n"
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{base}'\n"
            "port = 5432\n"
            "max_connections = 200\n"
            + ("" if durable else "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        )
    pg(bins["pg_ctl"], "-D", data, "-l", log, "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={base}&port=5432"
    finally:
        try:
            # immediate: no shutdown checkpoint, the cluster is deleted next anyway
            pg(bins["pg_ctl"], "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def new_database(server_url: str, **settings: str) -> str:
    """A fresh, empty database on the cluster at ``server_url`` (``settings``: its defaults); its URL."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            for key, value in settings.items():
                c.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'")
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
