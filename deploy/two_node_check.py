"""The proof of `make swarm-two-node` (deploy/two-node.sh runs it): through the load balancer,
replicas on BOTH nodes answer, all with the same version from the object store; after a retrain
job, all of them with the new one. Prints what it saw; exits 1 if the proof fails."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict

PORT, STACK = os.environ["PORT"], os.environ["STACK"]
URL = f"http://127.0.0.1:{PORT}"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def replica_nodes() -> dict[str, str]:
    """A running serve replica's address -> the node it runs on."""
    nodes = {}
    for task in docker("service", "ps", "-q", "--filter", "desired-state=running",
                       f"{STACK}_serve").split():
        info = json.loads(docker("inspect", task))[0]
        node = docker("node", "inspect", "--format", "{{.Description.Hostname}} "
                      "{{.Status.Addr}}", info["NodeID"]).strip()
        for attachment in info.get("NetworksAttachments", []):
            for address in attachment["Addresses"]:
                nodes[address.split("/")[0]] = node
    return nodes


def sample(seconds: float) -> dict[str, set[str]]:
    """replica address -> versions it answered with, over `seconds`."""
    seen: dict[str, set[str]] = defaultdict(set)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        request = urllib.request.Request(f"{URL}/predict", data=json.dumps(
            {"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                replica = response.headers["X-Softserve-Replica"].split()[1]
                seen[replica].add(json.loads(response.read())["model_version"])
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return seen


def wait_all(replicas: int, version: str | None, timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        seen = sample(3)
        nodes = replica_nodes()
        ok = len(seen) == replicas and all(len(v) == 1 for v in seen.values()) and \
            len({next(iter(v)) for v in seen.values()}) == 1 and \
            (version is None or all(v == {version} for v in seen.values()))
        if ok:
            return {r: (nodes.get(r, "?"), sorted(v)) for r, v in seen.items()}, \
                time.monotonic() - started
        if time.monotonic() - started > timeout:
            print(f"two-node: FAILED after {timeout} s: {dict(seen)} nodes {nodes}")
            print(docker("stack", "ps", "--no-trunc", STACK))
            sys.exit(1)


def main() -> None:
    replicas = 4
    started = time.monotonic()
    state, _ = wait_all(replicas, None, 900)
    print(f"two-node: all {replicas} replicas answer the same version "
          f"{time.monotonic() - started:.0f} s after deploy:")
    for replica, (node, versions) in sorted(state.items()):
        print(f"  replica {replica} on node {node}: version {versions}")
    nodes = {node for node, _ in state.values()}
    if len(nodes) < 2:
        print(f"two-node: FAILED: replicas on {nodes} only")
        sys.exit(1)
    [old] = next(iter(state.values()))[1]
    new = str(int(old) + 1)
    retrain = subprocess.run(["deploy/retrain.sh", STACK, "--log-every", "0"],
                             capture_output=True, text=True)
    if retrain.returncode != 0 or f"version {new})" not in retrain.stdout:
        print(f"two-node: FAILED: the retrain job:\n{retrain.stdout}\n{retrain.stderr}")
        sys.exit(1)
    state, took = wait_all(replicas, new, 120)
    print(f"two-node: after a retrain job, all {replicas} replicas on both nodes serve version "
          f"{new} (seen {took:.0f} s after the job ended):")
    for replica, (node, versions) in sorted(state.items()):
        print(f"  replica {replica} on node {node}: version {versions}")
    print("two-node: PASSED")


if __name__ == "__main__":
    main()
