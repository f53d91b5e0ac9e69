#!/usr/bin/env bash
# `make swarm-two-node`: deploy/stack.yml on a TWO-node Docker Swarm made on this one machine, and
# proof that replicas on both nodes serve the same versions from the object store.
#
# As root, with the engine of .ci/docker-engine.sh (DOCKER_HOST set) as node 1. Node 2 is a second
# dockerd in a network namespace of its own, joined to node 1 over a veth pair (10.231.77.1 <->
# .2; `nsenter --net=` runs it there). The images reach node 2 through a registry: Debian's
# docker-registry package on 10.231.77.1:15000, seen by both engines as 127.0.0.1:15000 (a socat
# forwarder on each side; an engine trusts a plain-HTTP registry on loopback only).
# Everything it made is removed at the end, whatever happens (stack, swarm on both engines,
# node 2's dockerd and data, the registry, the namespace and the veth pair, its images).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "two-node: needs root (network namespace, veth, a second dockerd)" >&2; exit 2; }
[ -n "${DOCKER_HOST:-}" ] || { echo "two-node: set DOCKER_HOST: eval \"\$(.ci/docker-engine.sh)\"" >&2; exit 2; }
command -v docker-registry >/dev/null && command -v socat >/dev/null || {
    echo "two-node: installing Debian's docker-registry and socat" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry socat >&2; }

WORK=${SOFTSERVE_TWO_NODE_ROOT:-/var/tmp/softserve-node2}
NS=softserve-node2
N1=10.231.77.1 N2=10.231.77.2
REG=127.0.0.1:15000
STACK=softserve-swarm-2node
TAG=two-node
PORT=${SOFTSERVE_PORT:-18090}
NODE1=$DOCKER_HOST NODE2=unix://$WORK/docker.sock
d1() { DOCKER_HOST=$NODE1 docker "$@"; }
d2() { DOCKER_HOST=$NODE2 docker "$@"; }
say() { echo "two-node [$(( $(date +%s) - started )) s]: $*" >&2; }
started=$(date +%s)
export AWS_ACCESS_KEY_ID="softserve-2node" AWS_SECRET_ACCESS_KEY="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# This run proves the stack with its own object store holding the repository: a
# SOFTSERVE_MODEL_REPOSITORY from the caller's shell is not this run's (tests/docker/test_swarm.py
# drops the caller's SOFTSERVE_ variables the same way).
unset SOFTSERVE_MODEL_REPOSITORY

[ "$(d1 info --format '{{.Swarm.LocalNodeState}}')" = inactive ] || {
    echo "two-node: node 1's engine is already in a swarm; not ours to change" >&2; exit 2; }
had_gwbridge=$(d1 network ls -q --filter name='^docker_gwbridge$')

cleanup() {
    set +e
    say "cleaning up"
    d1 stack rm "$STACK" >/dev/null 2>&1
    for _ in $(seq 1 60); do
        [ -z "$(d1 ps -q --filter name="${STACK}_")" ] && [ -z "$(d2 ps -q --filter name="${STACK}_" 2>/dev/null)" ] && break
        sleep 1
    done
    d2 swarm leave --force >/dev/null 2>&1
    d1 swarm leave --force >/dev/null 2>&1
    d1 ps -aq --filter name="${STACK}_" | xargs -r docker --host "$NODE1" rm -f >/dev/null 2>&1
    d1 volume rm "${STACK}_objects" >/dev/null 2>&1
    [ -n "$had_gwbridge" ] || d1 network rm docker_gwbridge >/dev/null 2>&1
    d1 image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "^(softserve-[a-z0-9]+:$TAG|$REG/)" \
        | xargs -r docker --host "$NODE1" image rm >/dev/null 2>&1
    [ -f "$WORK/dockerd.pid" ] && kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null && sleep 3
    for pidfile in "$WORK"/*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; done
    [ -n "${index_pid:-}" ] && kill "$index_pid" 2>/dev/null
    ip link del ss-node1 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    sleep 1
    umount -R "$WORK/exec" 2>/dev/null
    rm -rf "$WORK"
    say "done"
}
trap cleanup EXIT

mkdir -p "$WORK"

# --- the images, built on node 1 --------------------------------------------------------------
say "building the images"
index=http://127.0.0.1:18755/simple/
if ls /opt/wheels/torch-*.whl >/dev/null 2>&1; then  # these machines: torch from pip's wheels
    mkdir -p "$WORK/index/simple/torch" && ln -sf /opt/wheels/torch-*.whl "$WORK/index/simple/torch/"
    (cd "$WORK/index" && exec python3 -m http.server 18755 --bind 127.0.0.1) >/dev/null 2>&1 &
    index_pid=$!
else
    index=$(sed -n 's/^ARG PIP_EXTRA_INDEX_URL=//p' training/Dockerfile)
fi
d1 build -q --network host -f serving/Dockerfile -t "softserve-serve:$TAG" . >/dev/null
d1 build -q --network host --build-arg "PIP_EXTRA_INDEX_URL=$index" -f training/Dockerfile \
    -t "softserve-train:$TAG" . >/dev/null
d1 build -q --network host -t "softserve-lb:$TAG" deploy/lb >/dev/null
d1 build -q --network host -t "softserve-seaweedfs:$TAG" deploy/seaweedfs >/dev/null

# --- node 2: a network namespace, a veth pair, a dockerd ----------------------------------------
say "node 2: namespace $NS, veth $N1 <-> $N2, dockerd under $WORK"
ip netns add "$NS"
ip link add ss-node1 type veth peer name ss-node2
ip link set ss-node2 netns "$NS"
ip addr add "$N1/24" dev ss-node1
ip link set ss-node1 up
nsenter --net="/run/netns/$NS" sh -c "ip addr add $N2/24 dev ss-node2 && ip link set ss-node2 up && ip link set lo up"
nsenter --net="/run/netns/$NS" setsid dockerd --iptables=false --ip6tables=false --ip-forward=false \
    --storage-driver=overlay2 --data-root "$WORK/data" --exec-root "$WORK/exec" \
    --pidfile "$WORK/dockerd.pid" -H "$NODE2" </dev/null >"$WORK/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do d2 info >/dev/null 2>&1 && break; sleep 0.5; done
d2 info >/dev/null || { tail -20 "$WORK/dockerd.log" >&2; exit 1; }

# --- the registry, 127.0.0.1:15000 on both nodes ---------------------------------------------
say "registry (Debian's docker-registry) on $N1:15000, 127.0.0.1:15000 on both nodes"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: $N1:15000
EOF
setsid docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & echo $! >"$WORK/registry.pid"
setsid socat TCP-LISTEN:15000,bind=127.0.0.1,fork,reuseaddr "TCP:$N1:15000" >/dev/null 2>&1 & echo $! >"$WORK/socat1.pid"
nsenter --net="/run/netns/$NS" setsid socat TCP-LISTEN:15000,bind=127.0.0.1,fork,reuseaddr \
    "TCP:$N1:15000" >/dev/null 2>&1 & echo $! >"$WORK/socat2.pid"
sleep 1
for image in serve train lb seaweedfs; do
    d1 tag "softserve-$image:$TAG" "$REG/softserve-$image:$TAG"
    d1 push -q "$REG/softserve-$image:$TAG" >/dev/null
done

# --- the swarm ----------------------------------------------------------------------------------
say "swarm: node 1 ($N1) manager, node 2 ($N2) worker"
d1 swarm init --advertise-addr "$N1" --listen-addr "$N1:2377" >/dev/null
d2 swarm join --token "$(d1 swarm join-token -q worker)" --advertise-addr "$N2" \
    --listen-addr "$N2:2377" "$N1:2377" >/dev/null
deployed=$(date +%s)
SOFTSERVE_SERVE_IMAGE=$REG/softserve-serve:$TAG SOFTSERVE_TRAIN_IMAGE=$REG/softserve-train:$TAG \
SOFTSERVE_LB_IMAGE=$REG/softserve-lb:$TAG SOFTSERVE_SEAWEEDFS_IMAGE=$REG/softserve-seaweedfs:$TAG \
SOFTSERVE_REPLICAS=4 SOFTSERVE_PORT=$PORT SOFTSERVE_HEALTH_INTERVAL=1s \
    d1 stack deploy --compose-file deploy/stack.yml "$STACK" >/dev/null

# --- the proof ------------------------------------------------------------------------------------
export PORT STACK NODE1
python3 deploy/two_node_check.py
say "total $(( $(date +%s) - started )) s (deploy to proof: $(( $(date +%s) - deployed )) s)"
