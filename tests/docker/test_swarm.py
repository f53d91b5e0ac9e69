"""deploy/stack.yml on a one-node Docker Swarm, for real and under load.

The three images are built (the serving and training images as in test_compose.py, sharing its
build cache; the load balancer from deploy/lb/), the engine becomes a one-node swarm
(``docker swarm init --advertise-addr 127.0.0.1``), the stack is deployed under a name of its own
with its load balancer on a free port, and a pool of client threads sends /predict requests to
that port while the tests update the image, retrain, and kill a replica. Which replica answered
comes from the load balancer's ``X-Softserve-Replica`` header (deploy/lb/haproxy.cfg): nothing is
added to softserve's API.

At the end (the last test, and the fixture's teardown whatever happens): ``docker stack rm``, the
stack's volume removed, ``docker swarm leave --force``, the images removed, and nothing of the
stack left on the engine. Needs a Docker engine (skipped with the reason where none is reachable;
``SOFTSERVE_REQUIRE_DOCKER=1`` makes that a failure).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docker.test_compose import _cli, _require, _tail, torch_index  # noqa: F401 (fixture)
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "deploy" / "stack.yml"
RETRAIN = ROOT / "deploy" / "retrain.sh"
REPLICAS = 3
POLL_SECONDS = 2.0  # SOFTSERVE_POLL_SECONDS given to the stack
CLIENT_THREADS = 6
SETOSA = [5.1, 3.5, 1.4, 0.2]


# --- the load: a pool of client threads against the load balancer --------------------------------


@dataclass
class Answer:
    at: float
    replica: str  # "<haproxy slot> <address>"
    version: str


@dataclass
class Load:
    """CLIENT_THREADS threads posting /predict on keep-alive connections until stopped."""

    port: int
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failed_started: list[float] = field(default_factory=list)  # when each failed request began
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        body = json.dumps({"instances": [SETOSA]})
        conn = None
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    failure = f"{response.status} {data[:200]!r}"
                else:
                    answer = Answer(time.monotonic(),
                                    response.getheader("X-Softserve-Replica", "?"),
                                    json.loads(data)["model_version"])
                    with self._lock:
                        self.answers.append(answer)
                    continue
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.failures.append(failure)
                self.failed_started.append(began)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        for i in range(CLIENT_THREADS):
            thread = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)

    def total(self) -> int:
        with self._lock:
            return len(self.answers) + len(self.failures)

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        start = self.total()
        while self.total() < start + count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout} s"
            time.sleep(0.05)

    def since(self, started: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= started]


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Swarm:
    name: str
    port: int
    env: dict[str, str]
    images: dict[str, str]
    figures: list[str] = field(default_factory=list)
    joined: bool = False
    removed: bool = False
    had_gwbridge: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def docker(self, *args: str, timeout: float = 300, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"`docker {' '.join(args)}` exited {result.returncode}:\n"
                                 f"{_tail(result.stdout)}\n{_tail(result.stderr)}\n{self.logs()}")
        return result

    def logs(self) -> str:
        out = []
        for service in ("serve", "lb", "train", "seaweedfs"):
            result = subprocess.run(["docker", "service", "logs", "--tail", "15", "--no-trunc",
                                     f"{self.name}_{service}"], capture_output=True, text=True,
                                    env=self.env, timeout=60)
            out.append(f"--- {service} ---\n{result.stdout}{result.stderr}")
        tasks = subprocess.run(["docker", "stack", "ps", "--no-trunc", self.name],
                               capture_output=True, text=True, env=self.env, timeout=60)
        return "\n".join(out) + f"\n--- tasks ---\n{tasks.stdout}{tasks.stderr}"

    def running_serve_containers(self) -> list[str]:
        return self.docker("ps", "--quiet", "--filter",
                           f"label=com.docker.swarm.service.name={self.name}_serve",
                           "--filter", "status=running").stdout.split()

    def serve_tasks(self) -> list[tuple[str, str]]:
        """(image, current state) of the serve service's tasks that should run."""
        out = self.docker("service", "ps", "--filter", "desired-state=running", "--format",
                          "{{.Image}}\t{{.CurrentState}}", f"{self.name}_serve").stdout
        return [tuple(line.split("\t", 1)) for line in out.splitlines()]  # type: ignore[misc]

    def wait_for_replicas(self, load: Load, count: int, timeout: float) -> float:
        """Seconds until `count` replicas run and answer through the load balancer (answers
        from the last 1.5 s, all given after this call)."""
        started = time.monotonic()
        while True:
            seen = {a.replica for a in load.since(max(started, time.monotonic() - 1.5))}
            running = self.running_serve_containers()
            if len(seen) >= count and len(running) == count:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, \
                f"{len(seen)} replicas answer, {len(running)} run, after {timeout} s\n{self.logs()}"
            time.sleep(0.25)


def _leftovers(s: Swarm) -> dict[str, list[str]]:
    def ids(*args: str) -> list[str]:
        return s.docker(*args, check=False).stdout.split()

    return {
        # task containers are named <stack>_<service>.<slot>.<task id>, and labelled
        "containers": sorted(set(ids("ps", "-aq", "--filter", f"name={s.name}_")
                                 + ids("ps", "-aq", "--filter",
                                       f"label=com.docker.stack.namespace={s.name}"))),
        "networks": ids("network", "ls", "-q", "--filter", f"name={s.name}_"),
        "volumes": ids("volume", "ls", "-q", "--filter", f"name={s.name}_"),
        "images": [i for i in s.images.values()
                   if s.docker("image", "inspect", i, check=False).returncode == 0],
        "swarm": [state for state in [s.docker("info", "--format", "{{.Swarm.LocalNodeState}}",
                                               check=False).stdout.strip()]
                  if state != "inactive"],
        # made by `swarm init`, not removed by `swarm leave`
        "networks made by swarm init": [] if s.had_gwbridge else ids(
            "network", "ls", "-q", "--filter", "name=^docker_gwbridge$"),
    }


def _teardown(s: Swarm) -> dict[str, list[str]]:
    """stack rm, the volume, swarm leave, the images; what is left of the stack."""
    if not s.removed:
        s.removed = True
        started = time.monotonic()
        s.docker("stack", "rm", s.name, check=False)
        # The tasks' containers and the network go asynchronously; the containers of finished
        # jobs (train, retrain) stay until the task history is pruned: once nothing of the
        # stack runs, they are removed here.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            left = _leftovers(s)
            if not left["containers"] and not left["networks"]:
                break
            running = s.docker("ps", "-q", "--filter", f"name={s.name}_", check=False).stdout
            if not running.strip() and left["containers"]:
                s.docker("rm", "--force", *left["containers"], check=False)
            time.sleep(0.5)
        s.docker("volume", "rm", f"{s.name}_objects", check=False)
        if s.joined:
            s.docker("swarm", "leave", "--force", check=False)
            if not s.had_gwbridge:
                s.docker("network", "rm", "docker_gwbridge", check=False)
        s.docker("image", "rm", *s.images.values(), check=False)  # the layers stay cached
        s.figures.append(f"stack rm + swarm leave: {time.monotonic() - started:.1f} s")
    return _leftovers(s)


@pytest.fixture(scope="module")
def swarm(torch_index: str, docker_summary: list[str]) -> Iterator[Swarm]:  # noqa: F811
    _require(need_engine=True)
    name = f"softserve-swarm-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTSERVE_", "COMPOSE_"))}
    images = {"serve": f"softserve-serve:{name}", "train": f"softserve-train:{name}",
              "lb": f"softserve-lb:{name}", "seaweedfs": f"softserve-seaweedfs:{name}",
              "serve-v2": f"softserve-serve:{name}-v2"}
    port = free_port()
    env.update(SOFTSERVE_SERVE_IMAGE=images["serve"], SOFTSERVE_TRAIN_IMAGE=images["train"],
               SOFTSERVE_LB_IMAGE=images["lb"], SOFTSERVE_SEAWEEDFS_IMAGE=images["seaweedfs"],
               SOFTSERVE_PORT=str(port),
               # the stack's own object store accepts this identity (made up for the test)
               AWS_ACCESS_KEY_ID=f"softserve-{uuid.uuid4().hex[:8]}",
               AWS_SECRET_ACCESS_KEY=uuid.uuid4().hex,
               SOFTSERVE_REPLICAS=str(REPLICAS), SOFTSERVE_POLL_SECONDS=str(POLL_SECONDS),
               SOFTSERVE_HEALTH_INTERVAL="1s", SOFTSERVE_WORKERS="2")
    s = Swarm(name, port, env, images)
    started = time.monotonic()
    state = s.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    assert state == "inactive", \
        f"the engine is already in a swarm ({state}): not ours to change; leave it first"
    try:
        # The builds need the host's network on the project's machines (see test_compose.py);
        # the same arguments as docker/compose.test.yml, so the build cache is shared.
        s.docker("build", "--network", "host", "-f", "serving/Dockerfile", "-t", images["serve"],
                 ".", timeout=1800)
        s.docker("build", "--network", "host", "--build-arg",
                 f"PIP_EXTRA_INDEX_URL={torch_index}", "-f", "training/Dockerfile", "-t",
                 images["train"], ".", timeout=1800)
        s.docker("build", "--network", "host", "-t", images["lb"], "deploy/lb", timeout=900)
        s.docker("build", "--network", "host", "-t", images["seaweedfs"], "deploy/seaweedfs",
                 timeout=900)
        # "a new release" for the rolling update: another image (another id) of the same server
        new = subprocess.run(["docker", "build", "-t", images["serve-v2"], "-"],
                             input=f"FROM {images['serve']}\nLABEL softserve.test.release=2\n",
                             capture_output=True, text=True, env=env, timeout=300)
        assert new.returncode == 0, new.stderr
        s.figures.append(f"images built: {time.monotonic() - started:.1f} s")
        s.had_gwbridge = bool(s.docker("network", "ls", "-q", "--filter",
                                       "name=^docker_gwbridge$").stdout.strip())
        s.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        s.joined = True
        deployed = time.monotonic()
        s.docker("stack", "deploy", "--compose-file", str(STACK_FILE), name)
        deadline = time.monotonic() + 600
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            assert time.monotonic() < deadline, f"the stack never became ready\n{s.logs()}"
            time.sleep(0.25)
        s.figures.append(f"stack deploy to ready through the LB (train job included): "
                         f"{time.monotonic() - deployed:.1f} s")
        yield s
    finally:
        left = _teardown(s)
        s.figures.append(f"swarm tests in all, from build to clean: "
                         f"{time.monotonic() - started:.1f} s")
        docker_summary.append(f"swarm stack {name} on port {port}")
        docker_summary += s.figures
        assert not any(left.values()), f"left on the engine: {left}"


# --- the tests ------------------------------------------------------------------------------------


def test_stack_file_is_what_swarm_needs() -> None:
    """What Swarm needs of the stack file, read as the engine's own CLI reads it."""
    import yaml

    stack = yaml.safe_load(STACK_FILE.read_text())
    services = stack["services"]
    assert services["train"]["deploy"]["mode"] == "replicated-job"
    serve = services["serve"]
    assert serve["deploy"]["endpoint_mode"] == "dnsrr"
    assert serve["deploy"]["restart_policy"]["condition"] == "any"
    assert serve["deploy"]["update_config"]["order"] == "start-first"
    assert "/v2/health/ready" in " ".join(serve["healthcheck"]["test"])
    assert [p["mode"] for p in services["lb"]["ports"]] == ["host"]
    # the repository on object storage, shared by every node: no volume of the replicas' own
    assert "volumes" not in serve and "volumes" not in services["train"]
    assert stack["x-repository"]["SOFTSERVE_MODEL_REPOSITORY"].startswith(
        "${SOFTSERVE_MODEL_REPOSITORY:-s3://")
    for service in services.values():  # what `docker stack deploy` rejects or ignores
        assert not {"depends_on", "profiles", "build", "restart"} & set(service), service


def test_balanced_across_replicas(swarm: Swarm) -> None:
    with Load(swarm.port) as load:
        swarm.wait_for_replicas(load, REPLICAS, timeout=60)
        started = time.monotonic()
        load.wait_for(600)
    answers = Counter(a.replica.split()[0] for a in load.since(started))
    total = sum(answers.values())
    swarm.figures.append(f"balance over {total} requests: {dict(sorted(answers.items()))}")
    assert not load.failures, load.failures[:5]
    assert len(answers) == REPLICAS, answers
    # round robin: each replica gets about a third; at least a fifth, whatever the timing
    assert min(answers.values()) >= total / 5, answers


def test_rolling_image_update_fails_no_request(swarm: Swarm) -> None:
    with Load(swarm.port) as load:
        load.wait_for(50)
        started = time.monotonic()
        swarm.docker("service", "update", "--detach=false", "--quiet", "--image",
                     swarm.images["serve-v2"], f"{swarm.name}_serve", timeout=600)
        took = time.monotonic() - started
        swarm.wait_for_replicas(load, REPLICAS, timeout=60)
        load.wait_for(50)
    tasks = swarm.serve_tasks()
    swarm.figures.append(f"rolling update: {load.total()} requests, {len(load.failures)} "
                         f"failed, {took:.1f} s")
    assert not load.failures, load.failures[:5]
    assert [image for image, _ in tasks] == [swarm.images["serve-v2"]] * REPLICAS, tasks
    assert all(state.startswith("Running") for _, state in tasks), tasks


def test_retrain_job_publishes_a_version_every_replica_serves(swarm: Swarm) -> None:
    with Load(swarm.port) as load:
        load.wait_for(50)
        before = {a.version for a in load.since(time.monotonic() - 1)}
        assert len(before) == 1, before
        [old] = before
        new = str(int(old) + 1)
        result = subprocess.run([str(RETRAIN), swarm.name, "--log-every", "0"],
                                capture_output=True, text=True, env=swarm.env, timeout=900,
                                stdin=subprocess.DEVNULL)
        done = time.monotonic()
        assert result.returncode == 0, result.stdout + result.stderr + swarm.logs()
        assert f"(model iris, version {new})" in result.stdout, result.stdout
        # every replica answers with the new version, and keeps doing so for a poll interval
        deadline = done + 10 * POLL_SECONDS
        while True:
            recent = load.since(time.monotonic() - POLL_SECONDS - 0.5)
            by_replica = {a.replica for a in recent}
            stale = [a for a in recent if a.version != new]
            if len(by_replica) == REPLICAS and not stale:
                break
            assert time.monotonic() < deadline, \
                f"after {10 * POLL_SECONDS} s: {Counter((a.replica, a.version) for a in recent)}"
            time.sleep(0.25)
        answers = load.since(0)
        first_new = min(a.at for a in answers if a.version == new)
        last_old = max(a.at for a in answers if a.version == old)
    # the switch-over: from the first answer naming the new version to the last naming the old
    swarm.figures.append(
        f"retrain job: {load.total()} requests, {len(load.failures)} failed; every replica "
        f"on version {new} within {max(0.0, last_old - first_new):.1f} s of the first answer "
        f"naming it (poll interval {POLL_SECONDS:.0f} s)")
    assert not load.failures, load.failures[:5]


def test_killing_a_replica_loses_at_most_its_requests_in_flight(swarm: Swarm) -> None:
    with Load(swarm.port) as load:
        swarm.wait_for_replicas(load, REPLICAS, timeout=60)
        [victim, *_] = swarm.running_serve_containers()
        kill_called = time.monotonic()
        swarm.docker("kill", victim)  # SIGKILL: no graceful shutdown
        killed = time.monotonic()
        replaced_in = swarm.wait_for_replicas(load, REPLICAS, timeout=180)
        load.wait_for(50)
    assert victim not in swarm.running_serve_containers()
    swarm.figures.append(
        f"replica kill: {load.total()} requests, {len(load.failures)} failed "
        f"({Counter(f.split(':')[0][:40] for f in load.failures)}), all begun before "
        f"`docker kill` returned ({killed - kill_called:.2f} s); replaced, all "
        f"{REPLICAS} answering again {replaced_in:.1f} s after the kill")
    # Lost: only requests that were in flight when the container died, i.e. begun before
    # `docker kill` returned (a client thread whose request failed at the kill may begin another
    # while the call still runs, which is in flight too); a request begun after it never fails
    # (a connection to the dead replica fails to connect and is retried on another).
    late = [t - killed for t in load.failed_started if t >= killed]
    assert not late, f"{late} s after the kill: {load.failures}\n{swarm.logs()}"
    assert load.since(killed), "no answer after the kill"


def test_stack_rm_and_swarm_leave_leave_the_engine_clean(swarm: Swarm) -> None:
    left = _teardown(swarm)
    assert not any(left.values()), f"left on the engine: {left}"
