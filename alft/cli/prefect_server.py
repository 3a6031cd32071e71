"""The temporary Prefect server of a CLI command: it dies with the command, and sends no telemetry.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server (``SubprocessASGIServer``:
``python -m uvicorn ...`` as a child process) and stops it from ``atexit``, which a SIGKILL of
the command never runs: every ``kill -9`` of ``alft run`` left one behind, orphaned (ppid 1),
~250 MB, still listening. ``start_temporary_server`` starts that same server itself, before
any flow runs, and registers it where Prefect looks for it (as Prefect's own test harness does),
through a launcher (``_LAUNCHER``) that ties the server to this process:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel signals the server as soon as the
  thread that started it exits; so only the main thread asks for it (a worker thread may end
  long before the command does);
* everywhere: a watchdog thread in the server that sees its parent pid change (every 0.2 s).

Either way uvicorn shuts down on SIGTERM, and the watchdog exits hard 5 s later if it has not.
The server's environment turns Prefect's telemetry off (``SERVER_ENV_DEFAULTS``) unless the
user set those variables: alft runs on offline machines.

Starting that server costs 10-30 s per command. ``reuse_local_server`` first looks for a
Prefect server that is already up where ``prefect server start`` listens (``LOCAL_SERVER_URL``,
or ``ALFT_PREFECT_LOCAL_URL``), of the same minor version, and points ``PREFECT_API_URL`` at
it; ``ALFT_PREFECT_REUSE=0`` turns that off.
"""

from __future__ import annotations

import os
import threading
from typing import Any

#: What the temporary server's environment gets unless the user set it (a Prefect profile's
#: value wins too): no usage telemetry from the server, nor from the SDK inside it.
SERVER_ENV_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}

#: Runs uvicorn (``python -m uvicorn ARGS``) in a process that ends with its parent.
#: argv: parent pid, "1" to ask the kernel for a parent-death signal, then uvicorn's arguments.
_LAUNCHER = r"""
import os, signal, sys, threading, time
parent, deathsig = int(sys.argv[1]), sys.argv[2] == "1"
if deathsig:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass  # not Linux: the watchdog below
if os.getppid() != parent:
    sys.exit(0)  # the parent died before the signal was armed: nobody wants this server
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down ...
    time.sleep(5.0)
    os._exit(1)  # ... or not at all
threading.Thread(target=watch, name="alft-parent-watch", daemon=True).start()
sys.argv = ["uvicorn", *sys.argv[3:]]
import runpy
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""

#: where ``prefect server start`` listens unless told otherwise
LOCAL_SERVER_URL = "http://127.0.0.1:4200/api"


def local_server(url: str, timeout: float = 1.0) -> str | None:
    """The Prefect server version answering at API ``url`` (``/health`` true within ``timeout``,
    then ``/admin/version`` a string within 5 s: its first answer took 1.9 s on 2 cores), or None
    when nothing, or something else, answers there. A closed port fails at once."""
    import json
    import urllib.request

    base = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as r:  # noqa: S310 (a local URL)
            if r.status != 200 or json.loads(r.read() or b"null") is not True:
                return None
        with urllib.request.urlopen(f"{base}/admin/version", timeout=max(timeout, 5.0)) as r:  # noqa: S310
            version = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def _profile_sets_api_url() -> bool:
    """Whether the Prefect profiles file names an API URL (then the user chose a server)."""
    from pathlib import Path

    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    try:
        return "PREFECT_API_URL" in (home / "profiles.toml").read_text()
    except OSError:
        return False


def _prefect_imported() -> bool:
    import sys

    return "prefect" in sys.modules


def reuse_local_server() -> tuple[str | None, str]:
    """(URL, why): point ``PREFECT_API_URL`` at a local Prefect server that is already running,
    so this command starts none. Call it before Prefect is imported (its settings are read
    once). URL is None where nothing is reused; ``why`` says why, for the log."""
    from importlib.metadata import version

    if os.environ.get("PREFECT_API_URL"):
        return None, "PREFECT_API_URL is set"
    if os.environ.get("ALFT_PREFECT_REUSE", "1") == "0":
        return None, "ALFT_PREFECT_REUSE=0"
    if _prefect_imported() or _profile_sets_api_url():
        return None, "Prefect's settings are already chosen"
    url = os.environ.get("ALFT_PREFECT_LOCAL_URL", LOCAL_SERVER_URL)
    found = local_server(url)
    if found is None:
        return None, f"no Prefect server at {url}"
    mine = version("prefect")
    if found.split(".")[:2] != mine.split(".")[:2]:
        return None, f"the Prefect server at {url} runs {found}, this client {mine}"
    os.environ["PREFECT_API_URL"] = url
    return url, f"Prefect server {found} already running"


_lock = threading.Lock()


class _Subprocess:
    """Prefect's ``subprocess`` module as its server code sees it during one start: ``Popen`` of
    ``python -m uvicorn`` becomes the launcher, with ``SERVER_ENV_DEFAULTS`` in the environment."""

    def __init__(self, real: Any, deathsig: bool) -> None:
        self._real, self._deathsig = real, deathsig

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args, *rest, env=None, **kwargs):  # noqa: N802 - the name it replaces
        from alft.errors import OrchestratorError

        args = list(args)
        if args[1:3] != ["-m", "uvicorn"]:
            raise OrchestratorError(
                f"Prefect's temporary server command changed ({' '.join(map(str, args[:3]))} ...): alft cannot "
                "tie it to this process; set PREFECT_API_URL to a server you run (`prefect server start`)"
            )
        env = dict(os.environ if env is None else env)
        for key, value in SERVER_ENV_DEFAULTS.items():
            env.setdefault(key, value)
        launcher = [args[0], "-c", _LAUNCHER, str(os.getpid()), "1" if self._deathsig else "0"]
        return self._real.Popen(launcher + args[3:], *rest, env=env, **kwargs)


def _tied_server_class():
    from prefect.server.api import server as prefect_server

    class TiedServer(prefect_server.SubprocessASGIServer):
        """Prefect's temporary server, started through ``_LAUNCHER``."""

        def _run_uvicorn_command(self):
            deathsig = threading.current_thread() is threading.main_thread()
            with _lock:  # the module global is Prefect's; only this method reads it meanwhile
                real = prefect_server.subprocess
                prefect_server.subprocess = _Subprocess(real, deathsig)
                try:
                    return super()._run_uvicorn_command()
                finally:
                    prefect_server.subprocess = real

    return TiedServer


def start_temporary_server() -> str | None:
    """Start the temporary Prefect server now, tied to this process; its API URL.

    None when ``PREFECT_API_URL`` names a server (nothing to start). Prefect's clients find this
    one (``SubprocessASGIServer()`` returns the instance registered under no port) and never
    start their own. Call it from the main thread, before any flow runs.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    from alft.errors import OrchestratorError

    if PREFECT_API_URL.value():
        return None
    running = SubprocessASGIServer._instances.get(None)
    if running is not None and running.running:
        return running.api_url  # started already (this function, or Prefect before it)
    SubprocessASGIServer._instances.pop(None, None)
    server = _tied_server_class()()  # registers itself under no port
    try:
        server.start()
    except RuntimeError as exc:  # Prefect's start-up timeout, with the server's output
        text = " ".join(str(exc).split())
        raise OrchestratorError(
            f"the temporary Prefect server did not start: {text[:300]}; raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a server you run"
        ) from None
    return server.api_url
