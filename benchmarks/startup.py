"""Start-up of `alft run`: a temporary Prefect server per command vs reusing one already running.

Runs `alft run conf/banking77.yaml` with a budget of one cold-start batch (round 0 only, a
fresh campaign folder each time, the pool's embeddings already cached), interleaving the two
modes over repeats:

* ``temporary``: ``ALFT_PREFECT_REUSE=0``, the command starts (and stops) its own server;
* ``reuse``: a ``prefect server start`` is up (started once, before the repeats) and the
  command finds it (``ALFT_PREFECT_LOCAL_URL``).

Per run: seconds from the process start to its first step line (``round 0 · ...``), and to
its exit; median over repeats, the ratio reuse / temporary, the load average.
Writes ``benchmarks/results/startup.{json,md}``.

    .venv/bin/python benchmarks/startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT, cpu_model, offline_env  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    import urllib.request

    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("prefect server start did not answer within 180 s")


def one_run(mode: str, work: Path, url: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(PREFECT_HOME=str(home), COLUMNS="200")
    if mode == "temporary":
        env["ALFT_PREFECT_REUSE"] = "0"
    else:
        env.update(ALFT_PREFECT_REUSE="1", ALFT_PREFECT_LOCAL_URL=url)
    shutil.rmtree(work, ignore_errors=True)
    cmd = [str(BIN / "alft"), "run", str(ROOT / "conf" / "banking77.yaml"), "--set", "budget=100",
           "--set", "name=startup-bench", "--set", f"workdir={work}"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    first_step = None
    reused = False
    for line in proc.stdout:
        if first_step is None and "round 0 · " in line:
            first_step = time.monotonic() - t0
        reused |= "using the server already running" in line
    rc = proc.wait()
    total = time.monotonic() - t0
    if rc != 0 or first_step is None:
        raise SystemExit(f"alft run ({mode}) failed with {rc}")
    if reused != (mode == "reuse"):
        raise SystemExit(f"mode {mode}: the run {'did' if reused else 'did not'} reuse the server")
    return {"mode": mode, "first_step_s": first_step, "total_s": total, "load_1m": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    offline_env()
    tmp = Path(tempfile.mkdtemp(prefix="alft-startup-"))
    port = free_port()
    server = start_server(tmp / "server-home", port)
    url = f"http://127.0.0.1:{port}/api"
    rows = []
    try:
        one_run("temporary", tmp / "warm", url, tmp / "run-home")  # warms the embedding cache and imports
        for r in range(args.repeats):
            for mode in (("temporary", "reuse") if r % 2 == 0 else ("reuse", "temporary")):
                row = one_run(mode, tmp / f"{mode}-{r}", url, tmp / "run-home")
                row["repeat"] = r
                rows.append(row)
                print(f"{mode:9s} repeat {r}: first step {row['first_step_s']:.1f} s, exit {row['total_s']:.1f} s, "
                      f"load {row['load_1m']:.1f}", flush=True)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {m: {k: statistics.median(r[k] for r in rows if r["mode"] == m) for k in ("first_step_s", "total_s")}
           for m in ("temporary", "reuse")}
    result = {
        "protocol": "alft run conf/banking77.yaml --set budget=100 (round 0 only), warm embedding cache, "
                    f"{args.repeats} interleaved repeats per mode, median",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "rows": rows,
        "median": med,
        "ratio_reuse_vs_temporary": {k: med["reuse"][k] / med["temporary"][k] for k in ("first_step_s", "total_s")},
        "saved_s": {k: med["temporary"][k] - med["reuse"][k] for k in ("first_step_s", "total_s")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=1))
    md = ["| mode | start to first step (s) | start to exit (s) | load (1 min), runs |", "|---|---|---|---|"]
    for m in ("temporary", "reuse"):
        loads = ", ".join(f"{r['load_1m']:.1f}" for r in rows if r["mode"] == m)
        md.append(f"| {m} | {med[m]['first_step_s']:.1f} | {med[m]['total_s']:.1f} | {loads} |")
    rt = result["ratio_reuse_vs_temporary"]
    md.append(f"\nreuse / temporary: first step {rt['first_step_s']:.2f}, exit {rt['total_s']:.2f}")
    (args.out / "startup.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
