"""gunicorn settings for softserve; gunicorn's own command-line flags still override them.

This file is the one place that prepares the server process: the address (SOFTSERVE_BIND, else
SOFTSERVE_HOST_IP:SOFTSERVE_PORT, default 127.0.0.1:8080 — the server has no authentication, so
it is not on the network unless asked; the images set SOFTSERVE_BIND=0.0.0.0:8080 inside their
own network), SOFTSERVE_WORKERS (default: the CPU count) and the Prometheus multiprocess
directory (SOFTSERVE_METRICS_DIR, default a fresh temporary directory), which must exist before
any worker imports prometheus-client. Its hooks clean that directory at start, flush an exiting
worker's metrics and stop its threads (worker_exit), and drop a dead worker's live gauges.
"""

import glob
import os
import shutil
import tempfile
from typing import Any

_host = os.environ.get("SOFTSERVE_HOST_IP") or "127.0.0.1"
bind = os.environ.get("SOFTSERVE_BIND") or f"{_host}:{os.environ.get('SOFTSERVE_PORT') or 8080}"
workers = int(os.environ.get("SOFTSERVE_WORKERS") or os.cpu_count() or 1)
# Each worker builds its own app — and its onnxruntime sessions — after the fork.
preload_app = False
# One event loop per worker with keep-alive, that hands the app only whole requests (slow clients
# hold no worker): serving/worker.py. `--worker-class sync` still works (and is tested).
worker_class = "serving.worker.BufferingWorker"
# gunicorn >= 25 opens a control socket shared by every gunicorn of the user
# (~/.gunicorn/gunicorn.ctl); several servers (tests, benchmarks) would collide on it.
control_socket_disable = True
timeout = 30
graceful_timeout = 30
keepalive = 5
# gunicorn's own access log is off: softserve writes one JSON line per request itself.
accesslog = None

# onnxruntime (1.32, Linux) sends usage telemetry unless told not to; a model server must not
# phone home (and with no network its lookups slowed every worker's shutdown by ~10 s).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_metrics_dir = os.environ.get("SOFTSERVE_METRICS_DIR") or ""
_own_metrics_dir = not _metrics_dir
if _own_metrics_dir:
    # A HUP makes the master read this file again: it keeps the directory it made the first
    # time, where its workers' figures are (a new one would lose them, and leak the old one).
    # The pid tells this master from a new one started by USR2, which inherits the environment.
    _made_pid, _, _made = os.environ.get("SOFTSERVE_METRICS_DIR_MADE", "").partition(":")
    if _made_pid == str(os.getpid()) and os.path.isdir(_made):
        _metrics_dir = _made
    else:
        _metrics_dir = tempfile.mkdtemp(prefix="softserve-metrics-")
        os.environ["SOFTSERVE_METRICS_DIR_MADE"] = f"{os.getpid()}:{_metrics_dir}"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server: Any) -> None:
    # Figures of a previous run would be summed into this one's.
    os.makedirs(_metrics_dir, exist_ok=True)
    for path in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(path)


def post_worker_init(worker: Any) -> None:
    # Once the last worker of the first batch has its models loaded: one line that says the
    # server is ready and what to try (a restarted worker is older than that and says nothing).
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None) or {}
    repository = extensions.get("softserve")  # none for another app under this config (bench)
    if worker.age != worker.cfg.workers or repository is None:
        return
    address = worker.cfg.address[0]
    if isinstance(address, str):  # a unix socket
        url = f"http://localhost (unix socket {address})"
    else:
        host = "127.0.0.1" if address[0] in ("0.0.0.0", "::", "") else address[0]
        url = f"http://{f'[{host}]' if ':' in host else host}:{address[1]}"
    model = repository.predict_model
    state = repository.models.get(model) if model else None
    # The model's own example row (its F values), as its error messages show it.
    row = state.latest.shape.row_example if state and state.latest else "[5.1, 3.5, 1.4, 0.2]"
    print(f"softserve ready on {url} ({worker.cfg.workers} workers; models: "
          f"{', '.join(sorted(repository.models)) or 'none yet'}"
          f"{f'; POST /predict serves {model}' if model else ''})\n"
          f"  API docs:  {url}/docs\n"
          f"  try:       curl -s {url}/predict -d '{{\"instances\": [{row}]}}'\n"
          f"  models:    curl -s -X POST {url}/v2/repository/index", flush=True)


def worker_exit(server: Any, worker: Any) -> None:
    # Runs in a worker that leaves its loop: a graceful stop (SIGTERM, HUP, max_requests) or a
    # quick one (SIGQUIT, SIGINT). The telemetry holds what was recorded since its last periodic
    # flush: flush it, or those figures are lost. A SIGKILLed worker runs no hook: it loses at
    # most SOFTSERVE_METRICS_FLUSH_SECONDS of figures. gunicorn logs what this raises.
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None) or {}
    telemetry = extensions.get("softserve.telemetry")
    if telemetry is not None:
        telemetry.close()
    repository = extensions.get("softserve")
    if repository is not None:
        repository.close()


def child_exit(server: Any, worker: Any) -> None:
    # Runs in the master for every worker that ends, SIGKILL included: its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
