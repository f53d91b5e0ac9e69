"""Faults while serving: a worker SIGKILLed under load, a repository that vanishes, becomes
unreadable or fills with junk, and training killed at any point of its run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelrepo
from tests.reliability.conftest import (HOOKS, ROW, WORKER_CLASSES, Load, call, kill_worker,
                                        log_problems, log_size, metric_total, metrics, start,
                                        stop_checked, wait_for_workers)
from tests.support import ROOT
from tests.support.models import train
from tests.support.net import wait_until
from tests.support.processes import kill_quietly, process_state
from tests.support.server import Server

POLL = 0.5  # SOFTSERVE_POLL_SECONDS of these servers


def republish(repository: Path) -> int:
    """Publish version 1's model again as the next version (a retrain, minus the training)."""
    metadata, model_bytes = modelrepo.read_version(repository / "iris" / "1")
    return modelrepo.publish_version(repository, "iris", model_bytes, metadata).version


def served_versions(server: Server, n: int = 10) -> set[str]:
    """The versions that answered ``n`` /predict requests (spread over the workers)."""
    versions = set()
    for _ in range(n):
        status, body, _ = call(server.url + "/predict", ROW)
        assert status == 200, body
        versions.add(json.loads(body)["model_version"])
    return versions


def wait_serving(server: Server, version: str, timeout: float = 60) -> None:
    def check() -> None:
        assert served_versions(server) == {version}
    wait_until(check, timeout)


# --- a worker killed under load ------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", list(WORKER_CLASSES))
def test_worker_sigkilled_under_load(worker_class: str, iris_repository: Path,
                                     tmp_path: Path) -> None:
    """Only the requests the victim held can fail — at the connection level, never as an HTTP
    error; every request begun after it died succeeds; gunicorn replaces it; the metrics stay
    consistent: no dead worker's gauges, counters never lost by the survivors."""
    server = start(iris_repository, tmp_path, worker_class=worker_class,
                   env={"SOFTSERVE_METRICS_FLUSH_SECONDS": "0.2",
                        "SOFTSERVE_METRICS_DIR": str(tmp_path / "metrics")})
    clients = 6
    try:
        victim, survivor = wait_for_workers(server, 2)
        base = metrics(server)
        before_200 = metric_total(base, "softserve_requests_total", route="/predict", code="200")
        with Load(server.port, clients, max_requests=100_000, deadline=300) as load:
            wait_until(lambda: _at_least(load.count(), 100), timeout=120)
            kill_worker(server, victim)
            dead_at = time.monotonic()
            replaced = wait_for_workers(server, 2)
            assert victim not in replaced and survivor in replaced
            target = load.count() + 100
            wait_until(lambda: _at_least(load.count(), target), timeout=120)
        outcomes = load.outcomes
        failed = [o for o in outcomes if o.status != 200]
        print(f"\n{worker_class}: {len(outcomes)} requests, {len(failed)} failed around the "
              f"kill: {sorted({o.error or str(o.status) for o in failed})}")
        assert all(o.status is None for o in failed), "an HTTP error, not a lost connection"
        assert all(o.started < dead_at for o in failed), "a request after the kill failed"
        # sync: the victim held one request; softserve: at most one per kept-alive connection.
        assert len(failed) <= (1 if worker_class == "sync" else clients), failed
        successes = len(outcomes) - len(failed)

        def settled() -> dict:
            m = metrics(server)
            assert m["softserve_in_flight_requests"][()] == 1  # this /metrics request
            assert m["softserve_loaded_versions"][(("model", "iris"),)] == 1  # no dead gauge
            return m

        first = wait_until(settled)
        time.sleep(1)  # two flush intervals: what the live workers did is all in
        counted = metric_total(settled(), "softserve_requests_total", route="/predict",
                               code="200") - before_200
        lost = successes - counted
        print(f"{worker_class}: {successes} answered 200, {counted:.0f} counted; {lost:.0f} lost "
              "with the victim's unflushed figures")
        assert metric_total(first, "softserve_requests_total") >= 0
        assert 0 <= lost < successes, (successes, counted)
        # From now on every worker is alive: counts are exact.
        for _ in range(40):
            assert call(server.url + "/predict", ROW)[0] == 200

        def exact() -> None:
            now = metric_total(metrics(server), "softserve_requests_total", route="/predict",
                               code="200") - before_200
            assert now == counted + 40, (now, counted)

        wait_until(exact)
    finally:
        server.stop()


def _at_least(value: int, target: int) -> None:
    assert value >= target, (value, target)


# --- the repository under the server's feet ------------------------------------------------------


@pytest.fixture
def watched(private_repository: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server on a private repository that it reads without root's privileges."""
    server = start(private_repository, tmp_path, drop_dac=True,
                   env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    wait_for_workers(server, 2)
    yield server, private_repository
    server.stop()


def ready(server: Server) -> int:
    return call(server.url + "/v2/health/ready")[0]


def test_repository_disappears_and_comes_back(watched: tuple[Server, Path]) -> None:
    server, repository = watched
    log_start = log_size(server)
    away = repository.with_name("away")
    repository.rename(away)
    wait_until(lambda: _logged(server, "missing or unreadable", log_start))
    for _ in range(3):  # several polls later: still serving what it loaded, still ready
        assert served_versions(server) == {"1"} and ready(server) == 200
        time.sleep(POLL)
    away.rename(repository)
    assert republish(repository) == 2
    wait_serving(server, "2")
    assert ready(server) == 200
    assert not log_problems(server, log_start), log_problems(server, log_start)[:5]


def test_repository_emptied_reports_not_ready_then_recovers(watched: tuple[Server, Path]) -> None:
    """A repository that is there but holds no model: nothing to serve, so not ready (503),
    live; the model put back is served again."""
    server, repository = watched
    model_dir = repository / "iris"
    aside = repository.with_name("iris-aside")
    model_dir.rename(aside)

    def nothing_served() -> None:  # by every worker: each polls on its own
        for _ in range(10):
            assert call(server.url + "/v2/health/ready")[0] == 503
            status, body, _ = call(server.url + "/predict", ROW)
            assert status == 404 and "error" in json.loads(body)

    wait_until(nothing_served)
    assert call(server.url + "/v2/health/live")[0] == 200
    aside.rename(model_dir)
    wait_serving(server, "1")
    assert ready(server) == 200


@pytest.mark.parametrize("where", ["repository", "model", "version"])
def test_repository_unreadable_keeps_serving(watched: tuple[Server, Path], where: str) -> None:
    """chmod 000 on the repository, the model directory or the served version's directory:
    the server keeps serving what it loaded and stays ready; a worker started meanwhile boots;
    once readable again, a new version is picked up."""
    server, repository = watched
    target = {"repository": repository, "model": repository / "iris",
              "version": repository / "iris" / "1"}[where]
    log_start = log_size(server)
    target.chmod(0o000)
    try:
        time.sleep(4 * POLL)  # a few polls with the repository unreadable
        assert served_versions(server) == {"1"}, "stopped serving what it had loaded"
        assert ready(server) == 200
        # A worker that starts now (a crash, max_requests, a timeout) must come up too.
        workers = wait_for_workers(server, 2)
        kill_worker(server, workers[0])
        replaced = wait_for_workers(server, 2)  # raises if gunicorn gave up
        assert workers[0] not in replaced
        wait_until(lambda: _status(server, "/v2/health/live", 200))
    finally:
        target.chmod(0o755)
    assert republish(repository) == 2
    wait_serving(server, "2")
    problems = [p for p in log_problems(server, log_start) if "was sent SIGKILL" not in p]
    assert not problems, problems[:5]


def test_repository_fills_with_junk(watched: tuple[Server, Path]) -> None:
    """Stray files and directories of every kind a disk can hold: ignored or refused as broken,
    never served, never stopping the watcher; a real new version is still picked up."""
    server, repository = watched
    model_dir = repository / "iris"
    junk = {
        repository / "README.txt": b"not a model",
        repository / ".hidden" / "1" / "model.onnx": b"",
        repository / "-dash": None,
        model_dir / "notes.txt": b"x" * 10_000,
        model_dir / "0" / "model.onnx": b"zero is not a version",
        model_dir / "007" / "model.onnx": b"leading zeros are not a version",
        model_dir / ("9" * 30) / "model.onnx": b"too long to be a version",
        model_dir / "41" / "metadata.json": b"{not json",
        model_dir / "42" / "model.onnx": os.urandom(4096),
        model_dir / "43" / "metadata.json": json.dumps({"version": 43}).encode(),
        model_dir / ".tmp-999999999-abc" / "model.onnx": b"a writer's leftovers",
        model_dir / "retired-44" / "model.onnx": b"",
    }
    for path, content in junk.items():
        if content is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    (model_dir / "45").write_bytes(b"a file named like a version")
    (model_dir / "46").mkdir()
    (model_dir / "46" / "model.onnx").symlink_to(model_dir / "46" / "model.onnx")  # a loop
    (model_dir / "46" / "metadata.json").symlink_to("/nonexistent/metadata.json")
    (model_dir / "47").symlink_to(model_dir / "1")  # the same version under a second number
    # Until a valid version 48 exists, 1 is the newest valid one: still served, still ready.
    time.sleep(4 * POLL)
    assert served_versions(server) == {"1"} and ready(server) == 200
    for number in ("41", "42", "43", "46"):
        status, body, _ = call(server.url + f"/v2/models/iris/versions/{number}/ready")
        assert status == 503 and json.loads(body)["ready"] is False, (number, body)
    version = republish(repository)
    wait_serving(server, str(version))
    assert server.process.poll() is None and ready(server) == 200
    assert not log_problems(server), log_problems(server)[:5]


def test_special_files_in_a_version_do_not_hang_the_watcher(watched: tuple[Server, Path]) -> None:
    """A version whose metadata.json is a FIFO (or any file that never ends): refused as broken,
    like any unreadable file. Opening a FIFO blocks until a writer comes, so a scan that opens it
    hangs its worker's watcher for good — and a worker booting meanwhile never comes up."""
    server, repository = watched
    model_dir = repository / "iris"
    (model_dir / "2").mkdir()
    os.mkfifo(model_dir / "2" / "metadata.json")
    shutil.copy(model_dir / "1" / "model.onnx", model_dir / "2" / "model.onnx")
    time.sleep(4 * POLL)
    assert served_versions(server) == {"1"}
    # The next real version must still be picked up by every worker.
    assert republish(repository) == 3
    try:
        wait_serving(server, "3", timeout=30)
    finally:
        # Let any scan stuck in open() go, so that the server can stop.
        fd = os.open(model_dir / "2" / "metadata.json", os.O_RDWR | os.O_NONBLOCK)
        time.sleep(1)
        os.close(fd)


def test_a_device_file_in_a_version_is_refused_not_read_forever(tmp_path: Path) -> None:
    """metadata.json -> /dev/zero: read_bytes() would read until memory runs out. The reader
    runs in a child process capped at 1 GiB of address space, so a failure is a MemoryError
    there, not an exhausted machine."""
    version_dir = tmp_path / "iris" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "metadata.json").symlink_to("/dev/zero")
    (version_dir / "model.onnx").symlink_to("/dev/zero")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "import modelrepo\n"
        "from pathlib import Path\n"
        "try:\n"
        f"    modelrepo.read_version(Path({str(version_dir)!r}))\n"
        "except modelrepo.BrokenVersion as exc:\n"
        "    print('broken:', exc.reason)\n"
        "    sys.exit(0)\n"
        "except MemoryError:\n"
        "    print('MemoryError: read until memory ran out')\n"
        "    sys.exit(1)\n"
        "print('accepted')\n"
        "sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _logged(server: Server, text: str, since: int) -> None:
    with open(server.log_path, "rb") as f:
        f.seek(since)
        assert text in f.read().decode(errors="replace")


def _status(server: Server, path: str, expected: int) -> None:
    assert call(server.url + path)[0] == expected


# --- training killed at any point ----------------------------------------------------------------

PUBLISHER = (
    "import sys\n"
    "from pathlib import Path\n"
    "import modelrepo\n"
    "repository = Path(sys.argv[1])\n"
    "metadata, model_bytes = modelrepo.read_version(repository / 'iris' / '1')\n"
    "print(modelrepo.publish_version(repository, sys.argv[2], model_bytes, metadata).version)\n")


def hooked_env(repository: Path, stop_at: str | None = None,
               audit_log: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HOOKS), str(ROOT)]),
           "SOFTSERVE_TEST_AUDIT_ROOT": str(repository)}
    if stop_at:
        env["SOFTSERVE_TEST_STOP_AT"] = stop_at
    if audit_log:
        env["SOFTSERVE_TEST_AUDIT_LOG"] = str(audit_log)
    return env


def assert_only_complete_versions(repository: Path, model: str = "iris") -> dict[int, Path]:
    """Every integer version directory of the model reads back valid: nothing partial shows."""
    found = modelrepo.version_dirs(repository / model)
    for path in found.values():
        modelrepo.read_version(path)  # raises BrokenVersion for anything incomplete
    return found


def temporaries(repository: Path, model: str = "iris") -> list[str]:
    model_dir = repository / model
    if not model_dir.is_dir():
        return []
    return sorted(n for n in os.listdir(model_dir) if n.startswith(modelrepo.TMP_PREFIX))


@pytest.mark.parametrize("model", ["iris", "fresh"])  # a next version; a new model's first
def test_publish_killed_at_every_step(model: str, iris_repository: Path, tmp_path: Path) -> None:
    """SIGKILL a publisher just before each change it makes to the repository, one run per
    change: no partial version ever appears, and the next publish succeeds and removes what
    the dead one left."""
    base = tmp_path / "base"
    shutil.copytree(iris_repository, base)
    audit_log = tmp_path / "count.jsonl"
    subprocess.run([sys.executable, "-c", PUBLISHER, str(base), model], cwd=ROOT, check=True,
                   env=hooked_env(base, audit_log=audit_log), timeout=120)
    first = 1 if model == "fresh" else 2
    steps = [json.loads(line)["description"] for line in audit_log.read_text().splitlines()
             if json.loads(line)["kind"] == "mutation"]
    assert any("os.rename" in s for s in steps) and len(steps) >= 5, steps
    for step in range(1, len(steps) + 1):
        repository = tmp_path / f"run-{step}"
        shutil.copytree(iris_repository, repository)
        process = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(repository), model],
                                   cwd=ROOT, env=hooked_env(repository, stop_at=f"{step}:"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda p=process: _stopped(p), timeout=60)
        finally:
            process.kill()
            process.communicate(timeout=60)
        before = set(range(1, first))
        assert set(assert_only_complete_versions(repository, model)) == before, steps[step - 1]
        left = temporaries(repository, model)
        again = subprocess.run([sys.executable, "-c", PUBLISHER, str(repository), model],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and again.stdout.strip() == str(first), again.stderr
        assert set(assert_only_complete_versions(repository, model)) == before | {first}
        assert (repository / model / modelrepo.CONFIG_FILE).is_file()
        assert temporaries(repository, model) == [], \
            (steps[step - 1], left, temporaries(repository, model))


# (name, how the point is found): a line the CLI prints, or the hook's stop before the first
# change to the repository whose description contains the text.
TRAINING_KILL_POINTS = {
    "fitting": ("line", "Data: "),
    "export": ("line", "Exporting to ONNX"),
    "parity check": ("line", "Checking torch/onnxruntime parity"),
    "publish, first file": ("stop", "1:/model.onnx"),
    "publish, metadata last": ("stop", "1:/metadata.json"),
    "publish, before the rename": ("stop", "1:os.rename"),
}


def test_training_killed_at_any_point(private_repository: Path, tmp_path: Path) -> None:
    """Real `python -m training` runs, SIGKILLed while fitting, exporting, checking parity and at
    three points of the publish, all at once on one repository that a server watches: no
    partial version is ever visible (none is refused by the server either), the next training
    succeeds and is served, and the dead writers' temporary directories are gone."""
    repository = private_repository
    server = start(repository, tmp_path, env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    runs: dict[str, subprocess.Popen[str]] = {}
    lines: dict[str, list[str]] = {}
    readers: list[threading.Thread] = []
    try:
        for name, (kind, point) in TRAINING_KILL_POINTS.items():
            env = hooked_env(repository, stop_at=point if kind == "stop" else None)
            # Six trainings share two cores: one thread each, or OpenMP's spinning starves them.
            env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            runs[name] = subprocess.Popen(
                [sys.executable, "-m", "training", "--artifacts", str(repository),
                 "--log-every", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
            lines[name] = []
            readers.append(threading.Thread(target=_collect, daemon=True,
                                            args=(runs[name], lines[name])))
            readers[-1].start()
        killed: set[str] = set()

        def all_killed() -> None:
            for name, process in runs.items():
                if name in killed:
                    continue
                kind, point = TRAINING_KILL_POINTS[name]
                hit = any(point in line for line in lines[name]) if kind == "line" \
                    else process_state(process.pid) == "T"
                if hit:
                    process.kill()
                    killed.add(name)
                else:
                    assert process.poll() is None, (name, "ended before its kill point",
                                                     lines[name])
            assert killed == set(runs), {n: (process_state(runs[n].pid), lines[n][-1:])
                                         for n in set(runs) - killed}

        wait_until(all_killed, timeout=300, interval=0.02)
        for process in runs.values():
            process.wait(60)
        assert set(assert_only_complete_versions(repository)) == {1}
        left = temporaries(repository)
        assert left, "the publish kills should have left temporary directories"
        assert served_versions(server) == {"1"}
        assert train(repository) == 0
        assert set(assert_only_complete_versions(repository)) == {1, 2}
        assert temporaries(repository) == [], (left, temporaries(repository))
        wait_serving(server, "2")
        assert "refusing" not in server.log(), "a partial version was visible to the server"
    finally:
        for process in runs.values():
            kill_quietly(process.pid)
            process.wait(60)
        for reader in readers:
            reader.join(60)
        for process in runs.values():
            process.stdout.close()  # type: ignore[union-attr]
        stop_checked(server)


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)


def _stopped(process: subprocess.Popen) -> None:
    """The process stopped itself at its kill point (SIGSTOP from the hook)."""
    assert process.poll() is None, f"exited with {process.returncode} before its kill point"
    assert process_state(process.pid) == "T"
