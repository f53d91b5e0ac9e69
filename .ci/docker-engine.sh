#!/usr/bin/env bash
# A Docker engine for the container test (tests/docker), on a machine where none is reachable.
#
#   eval "$(.ci/docker-engine.sh)"    # as root; then `make test` runs tests/docker for real
#
# Prints the environment to use it (DOCKER_HOST) on stdout; everything else goes to stderr.
# Idempotent: an engine that is already reachable is used as it is and nothing is installed;
# a second run reuses what the first one installed, started and built.
#
# What it does where no engine is reachable (Debian bookworm, root, no container registry):
#  - apt-get installs Debian's docker.io (dockerd 20.10) and mmdebstrap;
#  - adds the Compose v2 and buildx CLI plugins from Debian trixie's docker-compose and
#    docker-buildx packages (bookworm has neither; they run on bookworm), downloaded with a
#    separate apt list made from this machine's own Debian sources, to
#    /usr/local/lib/docker/cli-plugins/;
#  - starts dockerd by hand, its data under $SOFTSERVE_DOCKER_ROOT (/var/tmp/softserve-docker),
#    listening only on a unix socket there, without touching the firewall;
#  - as no base image can be pulled, builds a stand-in for the Dockerfiles' base image
#    (python:3.11-slim-bookworm) from Debian's own packages with mmdebstrap: bookworm's python3
#    is 3.11; it gets `python`/`pip` in /usr/local/bin like the real image, and this machine's
#    CA bundle so that pip reaches the package index from inside a build.
# Nothing here is in the Dockerfiles or docker-compose.yml: they stay what a user runs anywhere.
set -euo pipefail

ROOT=${SOFTSERVE_DOCKER_ROOT:-/var/tmp/softserve-docker}
SOCKET=$ROOT/docker.sock
BASE_IMAGE=python:3.11-slim-bookworm          # what training/Dockerfile and serving/Dockerfile say
PLUGINS=/usr/local/lib/docker/cli-plugins       # one of the docker CLI's own plugin directories
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
started=$(date +%s)

say() { echo "docker-engine: $*" >&2; }
die() { say "error: $*"; exit 1; }

reachable() { timeout 20 docker info >/dev/null 2>&1; }

plugins_ok() { docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; }

# --- an engine that is already there is used as it is --------------------------------------
if [ -z "${DOCKER_HOST:-}" ] && command -v docker >/dev/null 2>&1 && reachable && plugins_ok; then
    say "an engine is reachable at the default socket; using it as it is"
    exit 0
fi
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix://$SOCKET" ]; then
    if reachable && plugins_ok; then
        say "an engine is reachable at DOCKER_HOST=$DOCKER_HOST; using it as it is"
        echo "export DOCKER_HOST='$DOCKER_HOST'"
        exit 0
    fi
    die "DOCKER_HOST=$DOCKER_HOST is set but no engine (with compose and buildx) answers there"
fi

[ "$(id -u)" = 0 ] || die "no Docker engine is reachable, and setting one up needs root"
export DOCKER_HOST=unix://$SOCKET
mkdir -p "$ROOT"

# --- packages -----------------------------------------------------------------------------
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}
# docker.io brings dockerd, containerd, runc, docker-init and docker-proxy; iproute2 the bridge.
apt_install docker.io mmdebstrap iproute2 ca-certificates

# Debian's client is /usr/bin/docker; another one earlier on PATH is fine, it negotiates the API.
command -v docker >/dev/null 2>&1 || die "no docker client after installing docker.io"

if ! plugins_ok; then
    say "adding the compose and buildx CLI plugins from Debian trixie"
    [ -r "$DEBIAN_SOURCES" ] || die "$DEBIAN_SOURCES (this machine's Debian sources) is missing"
    apt_dir=$ROOT/apt-trixie
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
    # This machine's own Debian sources, suite names changed (bookworm-security becomes
    # trixie-security, and so on).
    sed -E 's/\bbookworm\b/trixie/g' "$DEBIAN_SOURCES" >"$apt_dir/trixie.sources"
    apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/parts"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
              -o "Dir::State::Status=/dev/null" -o "Debug::NoLocking=1"
              -o "APT::Sandbox::User=root")
    mkdir -p "$apt_dir/parts"
    mv "$apt_dir/trixie.sources" "$apt_dir/parts/trixie.sources"
    apt-get "${apt_opts[@]}" -q update >&2
    (cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -q download docker-compose docker-buildx >&2)
    mkdir -p "$PLUGINS"
    for deb in "$apt_dir"/debs/*.deb; do
        extracted=$apt_dir/x/$(basename "$deb" .deb)
        rm -rf "$extracted" && mkdir -p "$extracted"
        dpkg-deb -x "$deb" "$extracted"
        find "$extracted" -path '*/cli-plugins/docker-*' -type f -exec install -m 0755 {} "$PLUGINS/" \;
    done
    rm -rf "$apt_dir/x"
    # the client may not need the engine for `version`, but check both answer
    docker compose version >&2 || die "the compose plugin does not run"
    docker buildx version >&2 || die "the buildx plugin does not run"
fi

# --- the engine -----------------------------------------------------------------------------
if ! reachable; then
    if [ -f "$ROOT/dockerd.pid" ] && kill -0 "$(cat "$ROOT/dockerd.pid")" 2>/dev/null; then
        die "dockerd $(cat "$ROOT/dockerd.pid") runs but does not answer on $SOCKET; see $ROOT/dockerd.log"
    fi
    rm -f "$SOCKET" "$ROOT/dockerd.pid"
    say "starting dockerd (data under $ROOT, log $ROOT/dockerd.log)"
    # --iptables=false, --ip-forward=false: this machine's firewall and routing are not ours to
    # change, and nothing a container sends leaves the machine. Published ports still work on
    # 127.0.0.1 through docker-proxy; builds that need the package index use the host's network.
    setsid dockerd --iptables=false --ip6tables=false --ip-forward=false --storage-driver=overlay2 \
        --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/dockerd.pid" \
        -H "unix://$SOCKET" </dev/null >>"$ROOT/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do
        reachable && break
        sleep 0.5
    done
    reachable || { tail -n 30 "$ROOT/dockerd.log" >&2; die "dockerd did not answer on $SOCKET within 60 s"; }
fi
say "engine: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null)"

# --- the stand-in base image ------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "building a stand-in for $BASE_IMAGE from Debian bookworm packages (mmdebstrap)"
    [ -r "$CA_BUNDLE" ] || die "$CA_BUNDLE is missing"
    rootfs_tar=$ROOT/python-3.11-slim-bookworm.tar
    # Like the real image: python3 3.11 with venv and pip, ca-certificates, no compilers, no docs;
    # python, python3, pip and pip3 in /usr/local/bin; pip free to install into the system
    # (no EXTERNALLY-MANAGED marker); the CA bundle of this machine, which pip needs to reach
    # the package index from here.
    # (merged /usr made by mmdebstrap's hook, not by the usrmerge package, which brings perl)
    mmdebstrap --variant=minbase --mode=root --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Check-Date "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --include=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata \
        --customize-hook='for t in python:python3 python3:python3 pip:pip3 pip3:pip3; do ln -sf /usr/bin/${t#*:} "$1/usr/local/bin/${t%%:*}"; done' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook="cp $CA_BUNDLE \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$rootfs_tar" "$DEBIAN_SOURCES" >&2
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "ENV PIP_CERT=$CA_BUNDLE" \
        --change 'CMD ["python3"]' \
        --message "stand-in for $BASE_IMAGE: Debian bookworm's python3, built by .ci/docker-engine.sh" \
        "$rootfs_tar" "$BASE_IMAGE" >&2
    rm -f "$rootfs_tar"
    docker run --rm "$BASE_IMAGE" sh -c 'python --version && pip --version' >&2
fi

say "ready in $(( $(date +%s) - started )) s"
echo "export DOCKER_HOST='$DOCKER_HOST'"
