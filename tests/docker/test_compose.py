"""``docker compose up`` for real: both images built, the stack up, real requests, retrain, down.

Needs a Docker engine with the compose plugin. Where none is reachable the whole module is
skipped with the reason; ``SOFTSERVE_REQUIRE_DOCKER=1`` (set by .ci/run) makes that a failure.
``eval "$(.ci/docker-engine.sh)"`` gets an engine on a machine without one (see README,
"Containers").

Everything the project's own machines need to build the images (host networking for the build,
the torch CPU wheel served from pip's find-links directory on 127.0.0.1) is in
docker/compose.test.yml and this module; docker-compose.yml and the Dockerfiles are what users
run. The stack runs under a project name of its own on a free 127.0.0.1 port, and is taken down
with its volume (``down -v``) whatever happens.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEST_OVERRIDE = ROOT / "docker" / "compose.test.yml"
TRAINING_DOCKERFILE = ROOT / "training" / "Dockerfile"
IRIS_CSV = ROOT / "training" / "data" / "iris.csv"
REQUIRE = "SOFTSERVE_REQUIRE_DOCKER"
HOW_TO_GET_ONE = 'eval "$(.ci/docker-engine.sh)"  (as root; see README, "Containers")'

# The server's default poll interval (SOFTSERVE_POLL_SECONDS, unset here): a new or rolled-back
# version must be served within a few of them.
POLL_SECONDS = 2.0
TORCH_INDEX_PORT = 18755
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


# --- is there an engine? -------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _missing(need_engine: bool) -> str | None:
    """What is missing for these tests (None: nothing)."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        if need_engine:
            info = _cli("info", "--format", "{{.ServerVersion}}", timeout=30)
            if info.returncode != 0 or not info.stdout.strip():
                last = (info.stderr.strip().splitlines() or ["no answer"])[-1]
                return f"no Docker engine is reachable (docker info: {last})"
        if _cli("compose", "version").returncode != 0:
            return "the docker compose plugin is missing"
    except subprocess.TimeoutExpired as exc:
        return f"{' '.join(map(str, exc.cmd))} did not answer within {exc.timeout} s"
    return None


def _require(need_engine: bool) -> None:
    problem = _missing(need_engine)
    if problem is None:
        return
    message = (f"CONTAINER TESTS NOT RUN: {problem}. Get an engine with {HOW_TO_GET_ONE}; "
               f"{REQUIRE}=1 turns this skip into a failure.")
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"{message} {REQUIRE} is set: the container tests must run.", pytrace=False)
    pytest.skip(message)


# --- the torch wheel, served on 127.0.0.1 as a package index for the training image's build ------


def _torch_requirement() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["optional-dependencies"]["train"]:
        match = re.fullmatch(r"torch\s*==\s*(\S+)", spec)
        if match:
            return match.group(1)
    raise AssertionError("pyproject.toml's train extra pins no torch==X")


def _local_torch_wheels() -> list[Path]:
    """The torch wheels of the pinned version in pip's find-links directories, if any."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, timeout=60).stdout
    dirs = [os.environ.get("PIP_FIND_LINKS", "")]
    dirs += re.findall(r"find-links='([^']*)'", listing)
    version = _torch_requirement()
    wheels: dict[str, Path] = {}
    for entry in " ".join(dirs).split():
        directory = Path(entry.removeprefix("file://"))
        if directory.is_dir():
            for wheel in directory.glob(f"torch-{version}*.whl"):
                wheels.setdefault(wheel.name, wheel)
    return sorted(wheels.values())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PIP_EXTRA_INDEX_URL for the training image's build.

    Where pip's find-links directory holds the pinned torch wheel (these machines), a PEP 503
    index of just that wheel on 127.0.0.1 (the build runs on the host's network); elsewhere the
    Dockerfile's own default.
    """
    wheels = _local_torch_wheels()
    if not wheels:
        match = re.search(r"^ARG PIP_EXTRA_INDEX_URL=(\S+)$", TRAINING_DOCKERFILE.read_text(),
                          re.MULTILINE)
        assert match, "training/Dockerfile declares no ARG PIP_EXTRA_INDEX_URL=<default>"
        yield match.group(1)
        return
    root = tmp_path_factory.mktemp("torch-index")
    project = root / "simple" / "torch"
    project.mkdir(parents=True)
    for wheel in wheels:
        (project / wheel.name).symlink_to(wheel)
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        # A fixed port when it is free: the URL is a build argument, part of the build cache's key.
        server = ThreadingHTTPServer(("127.0.0.1", TORCH_INDEX_PORT), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="torch-index", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """One compose project of docker-compose.yml (+ the test override) on 127.0.0.1:port."""

    project: str
    port: int
    data_dir: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def image(self, which: str) -> str:
        return f"softserve-{which}:{self.project}"  # SOFTSERVE_TAG is the project name

    def command(self, *args: str) -> list[str]:
        return ["docker", "compose", "--project-name", self.project,
                "--file", str(COMPOSE_FILE), "--file", str(TEST_OVERRIDE), *args]

    def compose(self, *args: str, timeout: float = 300, check: bool = True,
                timed: str | None = None) -> subprocess.CompletedProcess[str]:
        command = self.command(*args)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if timed:
            self.timings[timed] = time.monotonic() - started
        if check and result.returncode != 0:
            raise AssertionError(f"`{' '.join(command)}` exited {result.returncode}:\n"
                                 f"{_tail(result.stdout)}\n{_tail(result.stderr)}\n"
                                 f"{self.logs()}")
        return result

    def logs(self) -> str:
        result = subprocess.run(self.command("logs", "--no-color", "--tail", "40"), cwd=ROOT,
                                env=self.env, capture_output=True, text=True, timeout=60)
        return f"--- docker compose logs ---\n{result.stdout}{result.stderr}"

    def container(self, service: str) -> str:
        ids = self.compose("ps", "--all", "--quiet", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        result = _cli("inspect", self.container(service))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z) as a POSIX time."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    seconds = dt.datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00"))
    return seconds.timestamp() + float("0." + (match.group(2) or "0"))


def _get(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def _first_ready(url: str, stop: threading.Event, seen: list[float]) -> None:
    """Poll url every 50 ms until it answers 200: its POSIX time goes into seen."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    seen.append(time.time())
                    return
        except urllib.error.HTTPError as exc:
            exc.close()  # 503 until a model is served
        except (OSError, http.client.HTTPException):
            pass  # not published yet, or not listening yet
        stop.wait(0.05)


def _served_version(stack: Stack) -> str:
    status, body = _get(f"{stack.url}/predict", {"instances": [SETOSA]})
    assert status == 200, body
    return body["model_version"]


def _wait_for_version(stack: Stack, version: str, timeout: float) -> float:
    """Seconds until every worker serves version: each polls on its own, so it takes a run of
    answers, spread over more than a poll interval, that all name it."""
    started = time.monotonic()
    deadline = started + timeout
    streak_started, streak, seen = None, 0, []
    while time.monotonic() < deadline:
        now = time.monotonic()
        seen.append(_served_version(stack))
        if seen[-1] != version:
            streak_started, streak = None, 0
        else:
            streak_started, streak = streak_started or now, streak + 1
            if streak >= 3 and now - streak_started > POLL_SECONDS + 0.5:
                return streak_started - started
        time.sleep(0.1)
    raise AssertionError(f"not every answer names version {version} after {timeout} s: "
                         f"{seen[-20:]}\n{stack.logs()}")


@pytest.fixture(scope="module")
def stack(torch_index: str, tmp_path_factory: pytest.TempPathFactory,
          docker_summary: list[str]) -> Iterator[Stack]:
    """Build both images, `up --wait`, yield; then `down -v` and check nothing is left."""
    _require(need_engine=True)
    project = f"softserve-test-{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path_factory.mktemp("retrain-data")
    data_dir.chmod(0o755)  # the training image does not run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTSERVE_", "COMPOSE_"))}
    port = free_port()
    env.update(SOFTSERVE_HOST_IP="127.0.0.1", SOFTSERVE_PORT=str(port), SOFTSERVE_TAG=project,
               SOFTSERVE_DATA_DIR=str(data_dir), SOFTSERVE_TEST_TORCH_INDEX=torch_index,
               SOFTSERVE_WORKERS="2")
    s = Stack(project, port, data_dir, env)
    started = time.monotonic()
    try:
        s.compose("build", timeout=1800, timed="build")
        for which in ("serve", "train"):
            size = _cli("image", "inspect", "--format", "{{.Size}}", s.image(which)).stdout
            s.facts[f"{which} image"] = f"{int(size) / 1e6:.0f} MB"
        # Poll for the first 200 from /v2/health/ready while compose trains, then starts serve.
        stop, seen = threading.Event(), []
        poller = threading.Thread(target=_first_ready, name="ready-poller",
                                  args=(f"{s.url}/v2/health/ready", stop, seen), daemon=True)
        poller.start()
        try:
            s.compose("up", "--detach", "--wait", "--wait-timeout", "300", timeout=400,
                      timed="up --wait")
            poller.join(10)
        finally:
            stop.set()
            poller.join(10)
        assert seen, f"serve never answered 200 on /v2/health/ready\n{s.logs()}"
        serve_started = _docker_time(s.inspect("serve")["State"]["StartedAt"])
        s.timings["serve cold start (container start to ready)"] = seen[0] - serve_started
        yield s
    finally:
        try:
            s.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", timeout=300,
                      check=False, timed="down -v")
            label = f"label=com.docker.compose.project={project}"
            left = {"containers": _cli("container", "ls", "--all", "--quiet", "--filter",
                                       label).stdout.split(),
                    "volumes": _cli("volume", "ls", "--quiet", "--filter", label).stdout.split(),
                    "networks": _cli("network", "ls", "--quiet", "--filter",
                                     label).stdout.split()}
            _cli("image", "rm", s.image("serve"), s.image("train"))  # the layers stay cached
            s.timings["total, from build to down"] = time.monotonic() - started
            docker_summary.append(f"project {project} on 127.0.0.1:{port}")
            docker_summary += [f"{k}: {v}" for k, v in s.facts.items()]
            docker_summary += [f"{k}: {v:.1f} s" for k, v in s.timings.items()]
            assert not any(left.values()), f"left behind after down -v: {left}"
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"tearing down {project} timed out: {exc}") from None


# --- the tests -----------------------------------------------------------------------------------


def test_compose_file_is_valid_and_says_what_users_get() -> None:
    _require(need_engine=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTSERVE_", "COMPOSE_"))}
    for files in ([COMPOSE_FILE], [COMPOSE_FILE, TEST_OVERRIDE]):
        args = [a for f in files for a in ("--file", str(f))]
        checked = subprocess.run(
            ["docker", "compose", *args, "--profile", "retrain", "--profile", "tools",
             "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**env, "SOFTSERVE_TEST_TORCH_INDEX": "http://127.0.0.1:1/simple/"})
        assert checked.returncode == 0, checked.stderr
    services = json.loads(subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE_FILE), "--profile", "retrain", "--profile",
         "tools", "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env=env, check=True).stdout)["services"]
    train, serve, retrain = services["train"], services["serve"], services["retrain"]
    assert train["command"] == ["--if-empty"]
    assert serve["depends_on"]["train"]["condition"] == "service_completed_successfully"
    models, served = sorted(serve["volumes"], key=lambda v: v["target"])
    assert models["type"] == "volume" and models["target"] == "/models" and models["read_only"]
    # the prediction log: a volume of its own, written by the server, read by retrain
    assert served["type"] == "volume" and served["target"] == "/served"
    assert not served.get("read_only") and serve["environment"]["SOFTSERVE_PREDICTION_LOG"] == \
        "/served"
    assert [p["target"] for p in serve["ports"]] == [8080]
    assert serve["ports"][0]["published"] == "8080" and serve["ports"][0]["host_ip"] == "127.0.0.1"
    assert "/v2/health/ready" in " ".join(serve["healthcheck"]["test"])
    assert serve["restart"] == "on-failure"
    assert serve.get("stop_signal", "SIGTERM") == "SIGTERM" and serve["stop_grace_period"]
    assert "profiles" not in train and "profiles" not in serve
    assert retrain["profiles"] == ["retrain"]
    assert {v["target"]: v.get("read_only", False) for v in retrain["volumes"]} == {
        "/models": False, "/data": True, "/served": True}
    # Nothing of the test machines' set-up in what users run.
    for path in (COMPOSE_FILE, ROOT / "serving" / "Dockerfile", TRAINING_DOCKERFILE):
        text = path.read_text()
        assert "network: host" not in text and "/opt/wheels" not in text, path


def test_serving_image_has_no_torch_no_compiler_and_no_root(stack: Stack) -> None:
    serve = stack.image("serve")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli("run", "--rm", "--network", "none", "--entrypoint", args[0], serve,
                    *args[1:], timeout=120)

    no_torch = run("python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    assert run("id", "-u").stdout.strip() != "0"
    tools = run("sh", "-c", "for t in gcc cc g++ c++ make ld; do command -v $t; done; true")
    assert tools.stdout.strip() == "", f"build tools in the serving image: {tools.stdout}"
    has = run("python", "-c", "import onnxruntime, numpy, flask, gunicorn, orjson, serving, "
              "modelrepo; import importlib.util as u; print(u.find_spec('training'), "
              "u.find_spec('pip'))")
    assert has.returncode == 0, has.stderr
    assert has.stdout.split() == ["None", "None"]  # no training code, no pip
    for image in (serve, stack.image("train")):  # onnxruntime >= 1.29 would phone home
        config = json.loads(_cli("image", "inspect", image).stdout)[0]["Config"]
        assert "ORT_DISABLE_TELEMETRY=1" in config["Env"], image
    train = stack.image("train")
    torch_build = _cli("run", "--rm", "--network", "none", "--entrypoint", "python", train, "-c",
                       "import os, torch; print(torch.__version__, torch.version.cuda, "
                       "os.getuid())", timeout=120)
    version, cuda, uid = torch_build.stdout.split()
    assert version.startswith(_torch_requirement()) and cuda == "None" and uid != "0"


def test_serves_predict_and_v2_infer_with_gunicorn_as_pid_1(stack: Stack) -> None:
    status, ready = _get(f"{stack.url}/v2/health/ready")
    assert status == 200, ready
    status, body = _get(f"{stack.url}/predict", {"instances": [SETOSA, VIRGINICA]})
    assert status == 200, body
    assert body["model_name"] == "iris" and body["model_version"] == "1"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    status, body = _get(f"{stack.url}/v2/models/iris/infer", {
        "id": "e2e", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                 "data": SETOSA + VIRGINICA}]})
    assert status == 200, body
    assert body["id"] == "e2e" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["class"]["data"] == [0, 2] and outputs["probabilities"]["shape"] == [2, 3]
    state = stack.inspect("serve")
    assert state["State"]["Health"]["Status"] == "healthy"
    assert state["Config"]["User"] not in ("", "0", "root")
    pid1 = stack.compose("exec", "-T", "serve", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert "gunicorn" in Path(pid1[1] if pid1[0].endswith("python") else pid1[0]).name, pid1
    train = stack.inspect("train")["State"]
    assert train["Status"] == "exited" and train["ExitCode"] == 0


def test_retrain_publishes_a_version_the_running_server_picks_up(stack: Stack) -> None:
    csv = stack.data_dir / "new.csv"
    shutil.copyfile(IRIS_CSV, csv)
    csv.chmod(0o644)
    serve_started = stack.inspect("serve")["State"]["StartedAt"]
    result = stack.compose("run", "--rm", "retrain", "--data", "/data/new.csv", "--log-every",
                           "0", timeout=600, timed="retrain run")
    assert "(model iris, version 2)" in result.stdout, result.stdout
    picked_up = _wait_for_version(stack, "2", 5 * POLL_SECONDS + 5)
    stack.timings["every worker on version 2, after the retrain job ended"] = picked_up
    status, body = _get(f"{stack.url}/v2/models/iris/infer", {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": SETOSA}]})
    assert status == 200 and body["model_version"] == "2", body
    status, body = _get(f"{stack.url}/v2/models/iris")
    assert status == 200 and "2" in body["versions"], body
    # picked up by the running server: no restart
    assert stack.inspect("serve")["State"]["StartedAt"] == serve_started


def test_rollback_through_compose_run(stack: Stack) -> None:
    assert _served_version(stack) == "2"
    result = stack.compose("run", "--rm", "modelrepo", "rollback", "iris", timeout=120)
    assert "retired iris version 2" in result.stdout, result.stdout
    _wait_for_version(stack, "1", 5 * POLL_SECONDS + 5)
    listing = stack.compose("run", "--rm", "modelrepo", "list", timeout=120).stdout
    assert re.search(r"^\s+2\s+retired\b", listing, re.MULTILINE), listing
    assert re.search(r"^\s+1\s+live\b", listing, re.MULTILINE), listing


def test_sigterm_lets_the_request_in_flight_finish(stack: Stack) -> None:
    """`docker compose stop` sends SIGTERM: a request whose body is still arriving is answered,
    then gunicorn exits 0 — before the grace period, without SIGKILL."""
    body = json.dumps({"instances": [SETOSA] * 50}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as conn:
        conn.sendall(head + body[:100])
        time.sleep(1)  # a worker has the request and waits for the rest of the body
        started = time.monotonic()
        stopping = subprocess.Popen(stack.command("stop", "serve"), cwd=ROOT, env=stack.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while "Handling signal: term" not in stack.logs():
                assert time.monotonic() < deadline, f"gunicorn got no SIGTERM\n{stack.logs()}"
                time.sleep(0.2)
            time.sleep(0.5)
            conn.sendall(body[100:])
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        finally:
            output, _ = stopping.communicate(timeout=120)
    stack.timings["graceful stop"] = time.monotonic() - started
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.split()[1] == b"200", response[:500]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert len(answer["predictions"]) == 50
    assert stopping.returncode == 0, output
    state = stack.inspect("serve")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state  # 137: it was killed
    assert stack.timings["graceful stop"] < 30
