"""gunicorn settings for softserve; gunicorn's own command-line flags still override them.

SOFTSERVE_BIND (default 0.0.0.0:8080) and SOFTSERVE_WORKERS (default: the CPU count) are read
here, the one place that prepares the server process.
"""

import os

bind = os.environ.get("SOFTSERVE_BIND") or "0.0.0.0:8080"
workers = int(os.environ.get("SOFTSERVE_WORKERS") or os.cpu_count() or 1)
# Each worker builds its own app — and its onnxruntime sessions — after the fork.
preload_app = False
# gunicorn >= 25 opens a control socket shared by every gunicorn of the user
# (~/.gunicorn/gunicorn.ctl); several servers (tests, benchmarks) would collide on it.
control_socket_disable = True
timeout = 30
graceful_timeout = 30
keepalive = 5
