"""``docker compose up --scale serve=N`` behind the load balancer (deploy/compose.lb.yml), scaled up
and down under load: no request fails.

The images are built as in test_compose.py (sharing its build cache), the project runs under a
name of its own on a free 127.0.0.1 port, a pool of client threads (test_swarm.Load) posts
/predict to the load balancer while the replicas go 2 -> 4 -> 1, and everything goes with
``down -v`` whatever happens. Which replica answered comes from the load balancer's
``X-Softserve-Replica`` header. Needs a Docker engine (skipped with the reason where none is
reachable; ``SOFTSERVE_REQUIRE_DOCKER=1`` makes that a failure).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docker.test_compose import _cli, _require, _tail, torch_index  # noqa: F401 (fixture)
from tests.docker.test_swarm import Load
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "docker-compose.yml", ROOT / "docker" / "compose.test.yml",
         ROOT / "deploy" / "compose.lb.yml", ROOT / "docker" / "compose.lb.test.yml"]


@dataclass
class Project:
    name: str
    port: int
    env: dict[str, str]
    figures: list[str] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "--project-name", self.name,
                   *[a for f in FILES for a in ("--file", str(f))], *args]
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (f"`{' '.join(command)}` exited {result.returncode}:\n"
                                        f"{_tail(result.stdout)}\n{_tail(result.stderr)}")
        return result

    def lb_log(self) -> str:
        """The load balancer's last lines: one per failed request or retry (haproxy.cfg)."""
        return _tail(self.compose("logs", "--no-color", "--tail", "40", "lb").stdout)

    def running(self) -> list[str]:
        return self.compose("ps", "--quiet", "--status", "running", "serve").stdout.split()

    def wait_for_replicas(self, load: Load, count: int, timeout: float = 180) -> float:
        """Seconds until exactly `count` replicas run and answer (answers of the last 1.5 s,
        all given after this call)."""
        started = time.monotonic()
        while True:
            seen = {a.replica for a in load.since(max(started, time.monotonic() - 1.5))}
            if len(seen) == count and len(self.running()) == count:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, \
                f"{len(seen)} replicas answer after {timeout} s (want {count})"
            time.sleep(0.25)


@pytest.fixture(scope="module")
def project(torch_index: str, docker_summary: list[str]) -> Iterator[Project]:  # noqa: F811
    _require(need_engine=True)
    name = f"softserve-scale-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTSERVE_", "COMPOSE_"))}
    port = free_port()
    env.update(SOFTSERVE_HOST_IP="127.0.0.1", SOFTSERVE_PORT=str(port), SOFTSERVE_TAG=name,
               SOFTSERVE_TEST_TORCH_INDEX=torch_index, SOFTSERVE_WORKERS="2",
               SOFTSERVE_DATA_DIR=str(ROOT / "training" / "data"))
    p = Project(name, port, env)
    started = time.monotonic()
    try:
        p.compose("build", "train", "serve", "lb", timeout=1800)
        p.figures.append(f"compose build: {time.monotonic() - started:.1f} s")
        up = time.monotonic()
        p.compose("up", "--detach", "--wait", "--wait-timeout", "300", "--scale", "serve=2",
                  timeout=400)
        p.figures.append(f"up --wait --scale serve=2: {time.monotonic() - up:.1f} s")
        yield p
    finally:
        subprocess.run(["docker", "compose", "--project-name", name,
                        *[a for f in FILES for a in ("--file", str(f))],
                        "down", "--volumes", "--remove-orphans", "--timeout", "45"],
                       cwd=ROOT, env=env, capture_output=True, timeout=300)
        label = f"label=com.docker.compose.project={name}"
        left = [*_cli("container", "ls", "-aq", "--filter", label).stdout.split(),
                *_cli("volume", "ls", "-q", "--filter", label).stdout.split(),
                *_cli("network", "ls", "-q", "--filter", label).stdout.split()]
        _cli("image", "rm", *(f"softserve-{w}:{name}" for w in ("serve", "train", "lb")))
        p.figures.append(f"compose scale test in all: {time.monotonic() - started:.1f} s")
        docker_summary.append(f"compose project {name} (--scale, behind haproxy) on :{port}")
        docker_summary += p.figures
        assert not left, f"left behind after down -v: {left}"


def test_scaling_up_and_down_under_load_fails_no_request(project: Project) -> None:
    with Load(project.port) as load:
        project.wait_for_replicas(load, 2)
        for count in (4, 1, 3):
            started = time.monotonic()
            project.compose("up", "--detach", "--no-recreate", "--wait", "--wait-timeout", "300",
                            "--scale", f"serve={count}", timeout=400)
            took = project.wait_for_replicas(load, count)
            project.figures.append(f"scaled to {count}: {time.monotonic() - started:.1f} s "
                                   f"(all {count} answering {took:.1f} s after `up` returned)")
        load.wait_for(100)
    project.figures.append(f"scaling 2 -> 4 -> 1 -> 3 under load: {load.total()} requests, "
                           f"{len(load.failures)} failed")
    assert not load.failures, (load.failures[:5], project.lb_log())
    assert load.total() > 100


def test_replicas_publish_no_port_of_their_own(project: Project) -> None:
    for container in project.running():
        ports = _cli("port", container).stdout.strip()
        assert ports == "", ports
    conn = http.client.HTTPConnection("127.0.0.1", project.port, timeout=10)
    try:
        conn.request("GET", "/v2/health/ready")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("X-Softserve-Replica")
    finally:
        conn.close()
