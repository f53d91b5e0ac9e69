"""The model repository on S3-compatible object storage: ``s3://bucket/prefix``.

The layout is the directory layout, object for file (``<prefix>/<model>/<N>/model.onnx``,
``.../<N>/metadata.json``, ``<prefix>/<model>/config.pbtxt``, ``traffic.json``,
``retired-<N>/...``), so Triton reads the same bucket. Object storage has no rename and no
lock, so three rules replace them:

* **A version is complete only when its ``metadata.json`` exists** (the marker, written last).
  A version number is *claimed* first with ``<N>/.claim`` written conditionally
  (``If-None-Match: *``): of two publishers racing for N one wins, the other claims N+1. Then
  the files are uploaded, ``metadata.json`` last (conditionally too). A publisher that dies
  leaves a claimed, incomplete number: never served, never reused.
* **traffic.json is written conditionally**: ``If-Match`` the ETag it was read with (or
  ``If-None-Match: *`` when there was none); a writer that lost the race reads it again and
  re-applies its change.
* **Retiring** copies ``<N>/*`` to ``retired-<N>/*``, then deletes ``<N>/metadata.json`` first
  (no server loads the version after that), then the rest.

Two ways in, so the directory code stays the one implementation of the contract:

* :func:`open_repository` (commands, training): the repository is *checked out* into a
  temporary directory, the directory code runs on it, and every write it makes goes through to
  the bucket as it happens (the hooks in :mod:`modelrepo`: publish, retire, config.pbtxt,
  traffic.json), under the rules above.
* :class:`S3Store.sync_view` (serving): one listing per poll; versions whose objects' ETags and
  sizes changed are downloaded into a local cache directory (the *view*), which the server then
  scans exactly like a directory (sha256 verified before a load).

Endpoint, region and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, the config and
credentials files), or ``SOFTSERVE_S3_ENDPOINT_URL``; never from the repository URL. boto3 is
imported only when an ``s3://`` repository is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelrepo
from modelrepo import RepositoryError, StoreConflict

log = logging.getLogger("softserve.storage")

SCHEME = "s3://"
CLAIM_FILE = ".claim"
ENDPOINT_ENV = "SOFTSERVE_S3_ENDPOINT_URL"
POLICY_FILE = "traffic.json"  # modelrepo.policy.POLICY_FILE (not imported: no cycle)
STATE_FILE = ".state.json"
# How many intact versions a server's view keeps beyond keep_versions (one whose metadata
# breaks the schema is intact but not loadable: the spare covers it).
VIEW_SPARE = 1
CONFLICT_RETRIES = 10

# (ETag, size) of one object; a listing maps keys relative to the prefix to them.
ObjectInfo = tuple[str, int]


class StoreError(RepositoryError):
    """The object store cannot be reached, refuses the credentials, or has no such bucket.
    The message names the store and the fix, never a secret."""


def is_remote(location: str | os.PathLike[str] | None) -> bool:
    """Whether a repository setting names object storage (``s3://``; a ``Path`` made of it
    reads ``s3:/``)."""
    return location is not None and str(location).startswith("s3:/")


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")


def parse(location: str | os.PathLike[str]) -> Location:
    """``s3://bucket[/prefix]`` (or its ``Path`` form ``s3:/bucket/prefix``) as a Location.
    Raises RepositoryError for anything else, or credentials in the URL."""
    text = str(location)
    rest = text[len("s3://"):] if text.startswith("s3://") else text[len("s3:/"):]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket or not bucket:
        raise RepositoryError(
            "an object-store repository is s3://bucket/prefix (credentials and endpoint come "
            "from the AWS settings, e.g. AWS_ACCESS_KEY_ID and AWS_ENDPOINT_URL, never the URL)")
    prefix = "/".join(p for p in prefix.split("/") if p)
    return Location(bucket, prefix + "/" if prefix else "")


def _endpoint() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Store:
    """One ``s3://bucket/prefix`` repository. Every method raises StoreError when the store
    cannot be reached or refuses; the writes raise StoreConflict when their condition fails."""

    def __init__(self, location: str | os.PathLike[str] | Location) -> None:
        self.location = location if isinstance(location, Location) else parse(location)
        import boto3
        from botocore.config import Config as BotoConfig

        # A session of its own: boto3's default session caches the credentials it first
        # resolved, so a process would never see them change (rotated keys, a new profile).
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=_endpoint(),
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"},
                              connect_timeout=5, read_timeout=30,
                              s3={"addressing_style": "path"}))

    def __str__(self) -> str:
        return str(self.location)

    # --- errors ---------------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> Exception:
        """The exception to raise for a botocore failure: StoreConflict, FileNotFoundError
        (no such key) or StoreError with a message that names no secret."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"the model store {self.location}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                return StoreConflict(f"{where}: {doing}: another writer was first")
            if code in ("NoSuchKey", "404", "NotFound"):
                return FileNotFoundError(doing)
            if code == "NoSuchBucket":
                return StoreError(f"{where}: bucket {self.location.bucket!r} does not exist: "
                                  "create it (python -m modelrepo init) or fix "
                                  f"{modelrepo.REPOSITORY_ENV}")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                        "InvalidToken", "ExpiredToken", "403") or status == 403:
                return StoreError(f"{where} refused the credentials ({code or status}) while "
                                  f"{doing}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                  "(or AWS_PROFILE and its credentials file)")
            return StoreError(f"{where}: {doing} failed: {code or status}")
        if isinstance(exc, NoCredentialsError):
            return StoreError(f"{where}: no credentials: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if isinstance(exc, BotoCoreError):
            return StoreError(f"{where} is unreachable while {doing}: "
                              f"{type(exc).__name__} (endpoint: {ENDPOINT_ENV} or "
                              "AWS_ENDPOINT_URL)")
        return exc

    @contextlib.contextmanager
    def _calling(self, doing: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, doing) from None

    # --- objects --------------------------------------------------------------------------

    def key(self, rel: str) -> str:
        return self.location.prefix + rel

    def list_objects(self) -> dict[str, ObjectInfo]:
        """Every object under the prefix: relative key -> (ETag, size). One paginated listing."""
        found: dict[str, ObjectInfo] = {}
        with self._calling("listing"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self.location.prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    rel = obj["Key"][len(self.location.prefix):]
                    found[rel] = (str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)))
        return found

    def get(self, rel: str, limit: int = modelrepo.MAX_MODEL_BYTES) -> tuple[bytes, str]:
        """(bytes, ETag) of one object. Raises FileNotFoundError, StoreError."""
        with self._calling(f"reading {rel}"):
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key(rel))
            if int(answer.get("ContentLength", 0)) > limit:
                answer["Body"].close()
                raise StoreError(f"{self.location}/{rel} is over {limit} bytes")
            data = answer["Body"].read()
        return data, str(answer.get("ETag", "")).strip('"')

    def put(self, rel: str, data: bytes, *, if_none_match: bool = False,
            if_match: str | None = None) -> str:
        """Write one object, conditionally if asked; its new ETag. Raises StoreConflict."""
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = f'"{if_match}"'
        with self._calling(f"writing {rel}"):
            answer = self.client.put_object(Bucket=self.location.bucket, Key=self.key(rel),
                                            Body=data, **extra)
        return str(answer.get("ETag", "")).strip('"')

    def delete(self, rel: str) -> None:
        with self._calling(f"deleting {rel}"):
            self.client.delete_object(Bucket=self.location.bucket, Key=self.key(rel))

    def copy(self, source: str, target: str) -> None:
        with self._calling(f"copying {source}"):
            self.client.copy_object(Bucket=self.location.bucket, Key=self.key(target),
                                    CopySource={"Bucket": self.location.bucket,
                                                "Key": self.key(source)})

    # --- the layout -----------------------------------------------------------------------

    def claim_version(self, model: str, at_least: int) -> int:
        """Claim the first free version number >= ``at_least`` (and above every number the
        listing shows used) with a conditional ``<N>/.claim``; that number."""
        number = max(at_least, highest_used(self.list_objects(), model) + 1)
        for _ in range(1000):
            try:
                self.put(f"{model}/{number}/{CLAIM_FILE}", str(os.getpid()).encode(),
                         if_none_match=True)
                return number
            except StoreConflict:
                number += 1  # a racing publisher has it: the next one
        raise StoreError(f"{self.location}: could not claim a version number for {model}")

    def upload_version(self, model: str, number: int, files: Mapping[str, bytes]) -> None:
        """A claimed version's files, ``metadata.json`` (the completion marker) last and
        conditional."""
        for name, data in sorted(files.items()):
            if name != modelrepo.METADATA_FILE:
                self.put(f"{model}/{number}/{name}", data)
        self.put(f"{model}/{number}/{modelrepo.METADATA_FILE}",
                 files[modelrepo.METADATA_FILE], if_none_match=True)

    def retire(self, model: str, number: int) -> None:
        """``<N>/*`` -> ``retired-<N>/*``: copies first, then the marker deleted, then the rest."""
        names = [rel for rel in self.list_objects() if rel.startswith(f"{model}/{number}/")]
        for rel in names:
            if not rel.endswith("/" + CLAIM_FILE):
                self.copy(rel, f"{model}/{modelrepo.RETIRED_PREFIX}{number}/"
                               + rel.rsplit("/", 1)[1])
        marker = f"{model}/{number}/{modelrepo.METADATA_FILE}"
        if marker in names:
            self.delete(marker)
        for rel in names:
            if rel != marker:
                self.delete(rel)

    # --- serving: the local view ----------------------------------------------------------

    def sync_view(self, view: Path, keep_versions: int,
                  listing: dict[str, ObjectInfo] | None = None) -> list[str]:
        """Make the directory ``view`` hold what a server needs of the bucket: each model's
        traffic.json and config.pbtxt, its complete versions newest first until
        ``keep_versions`` + VIEW_SPARE of them are intact (sha256), every version its policy
        names, downloaded whole before they appear
        (staged, then renamed into place); an empty ``retired-<N>`` per retired version.
        Versions already there with the same objects (ETags and sizes) are not downloaded
        again; versions no longer wanted are removed. Serialised across processes by a lock on
        the view. Returns what was downloaded ("model/N"). Raises StoreError.
        """
        listing = self.list_objects() if listing is None else listing
        view.mkdir(parents=True, exist_ok=True)
        downloaded: list[str] = []
        with modelrepo.model_lock(view):
            state_path = view / STATE_FILE
            try:
                state: dict[str, Any] = json.loads(state_path.read_text())
            except (OSError, ValueError):
                state = {}
            new_state: dict[str, Any] = {}
            for model in model_names(listing):
                model_dir = view / model
                model_dir.mkdir(exist_ok=True)
                for name in (POLICY_FILE, modelrepo.CONFIG_FILE):
                    rel = f"{model}/{name}"
                    fp = _fp({rel: listing[rel]}) if rel in listing else None
                    if fp is None:
                        (model_dir / name).unlink(missing_ok=True)
                        continue
                    new_state[rel] = fp
                    if state.get(rel) == fp and (model_dir / name).exists():
                        continue
                    try:
                        data, _ = self.get(rel, 64 << 20)
                    except FileNotFoundError:
                        new_state.pop(rel)
                        continue
                    _replace_file(model_dir / name, data)
                complete = complete_versions(listing, model)
                named = _policy_versions(model_dir / POLICY_FILE) & set(complete)
                # Newest first, until keep_versions + VIEW_SPARE intact ones (model.onnx
                # matching its sha256) are there: a corrupt newest version does not crowd out
                # the valid ones a directory's server would load.
                wanted: set[int] = set()
                intact_count = 0
                for number in sorted(complete, reverse=True):
                    if intact_count >= keep_versions + VIEW_SPARE and number not in named:
                        continue
                    rel = f"{model}/{number}"
                    fp = _fp(complete[number])
                    target = model_dir / str(number)
                    cached = state.get(rel)
                    if isinstance(cached, list) and cached[:1] == [fp] and target.is_dir():
                        intact = bool(cached[1])
                    else:
                        placed = self._download_version(model, number, complete[number], target)
                        if placed is None:
                            continue
                        intact = placed
                        downloaded.append(rel)
                    new_state[rel] = [fp, intact]
                    wanted.add(number)
                    intact_count += intact
                retired = set(retired_numbers(listing, model))
                for entry in os.listdir(model_dir):
                    found = modelrepo.parse_version(entry)
                    if found is not None and found not in wanted:
                        shutil.rmtree(model_dir / entry, ignore_errors=True)
                    elif entry.startswith(modelrepo.RETIRED_PREFIX) and \
                            modelrepo.parse_version(entry[len(modelrepo.RETIRED_PREFIX):]) \
                            not in retired:
                        shutil.rmtree(model_dir / entry, ignore_errors=True)
                for number in retired:
                    (model_dir / f"{modelrepo.RETIRED_PREFIX}{number}").mkdir(exist_ok=True)
            for entry in os.listdir(view):
                if modelrepo.is_model_name(entry) and entry not in model_names(listing):
                    shutil.rmtree(view / entry, ignore_errors=True)
            _replace_file(state_path, json.dumps(new_state).encode())
        return downloaded

    def _download_version(self, model: str, number: int, objects: Mapping[str, ObjectInfo],
                          target: Path) -> bool | None:
        """Download one complete version into a staging directory, then rename it over
        ``target``; whether its model.onnx matches the sha256 in its metadata.json (the
        server's scan verifies it all again). None (nothing placed) when an object vanished or
        changed mid-download."""
        staging = Path(tempfile.mkdtemp(prefix=f"{modelrepo.TMP_PREFIX}{os.getpid()}-",
                                        dir=target.parent))
        files: dict[str, bytes] = {}
        try:
            for rel, (etag, size) in objects.items():
                name = rel.rsplit("/", 1)[1]
                try:
                    data, got = self.get(rel)
                except FileNotFoundError:
                    log.warning("model %s version %s changed while downloading (%s is gone); "
                                "not served", model, number, name)
                    return None
                if got != etag or len(data) != size:
                    log.warning("model %s version %s changed while downloading (%s); "
                                "not served", model, number, name)
                    return None
                modelrepo._write_file(staging / name, data)
                files[name] = data
            os.chmod(staging, 0o755)
            if target.exists():
                old = target.with_name(f"{modelrepo.TMP_PREFIX}{os.getpid()}-old-{number}")
                os.rename(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(staging, target)
            log.info("downloaded model %s version %s from the model store", model, number,
                     extra={"model": model, "version": str(number)})
            try:
                recorded = json.loads(files[modelrepo.METADATA_FILE])["model"]["sha256"]
            except (KeyError, TypeError, ValueError, RecursionError):
                return False
            return bool(recorded == hashlib.sha256(files.get(modelrepo.MODEL_FILE, b""))
                        .hexdigest())
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --- reading a listing ----------------------------------------------------------------------


def _fp(objects: Mapping[str, ObjectInfo]) -> str:
    """A fingerprint of objects (keys, ETags, sizes): what identifies content without it."""
    return hashlib.sha256(json.dumps(sorted(objects.items())).encode()).hexdigest()


def listing_fingerprint(listing: Mapping[str, ObjectInfo]) -> str:
    return _fp(listing)


def model_names(listing: Mapping[str, ObjectInfo]) -> list[str]:
    return sorted({rel.split("/", 1)[0] for rel in listing if "/" in rel
                   and modelrepo.is_model_name(rel.split("/", 1)[0])})


def _version_objects(listing: Mapping[str, ObjectInfo], model: str,
                     directory: str) -> dict[str, ObjectInfo]:
    start = f"{model}/{directory}/"
    return {rel: info for rel, info in listing.items()
            if rel.startswith(start) and "/" not in rel[len(start):]}


def _numbers(listing: Mapping[str, ObjectInfo], model: str, prefix: str = "") -> set[int]:
    found = set()
    for rel in listing:
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] == model and parts[1].startswith(prefix):
            number = modelrepo.parse_version(parts[1][len(prefix):])
            if number is not None:
                found.add(number)
    return found


def complete_versions(listing: Mapping[str, ObjectInfo],
                      model: str) -> dict[int, dict[str, ObjectInfo]]:
    """The model's versions whose marker (metadata.json) exists: number -> their objects
    (the claim left out)."""
    found: dict[int, dict[str, ObjectInfo]] = {}
    for number in sorted(_numbers(listing, model)):
        objects = _version_objects(listing, model, str(number))
        if f"{model}/{number}/{modelrepo.METADATA_FILE}" in objects:
            found[number] = {k: v for k, v in objects.items() if not k.endswith("/" + CLAIM_FILE)}
    return found


def incomplete_versions(listing: Mapping[str, ObjectInfo], model: str) -> list[int]:
    """Numbers claimed or half-uploaded, without their marker: never served, never reused."""
    return sorted(_numbers(listing, model) - set(complete_versions(listing, model)))


def retired_numbers(listing: Mapping[str, ObjectInfo], model: str) -> list[int]:
    return sorted(_numbers(listing, model, modelrepo.RETIRED_PREFIX))


def highest_used(listing: Mapping[str, ObjectInfo], model: str) -> int:
    return max([0, *_numbers(listing, model), *retired_numbers(listing, model)])


def _policy_versions(path: Path) -> set[int]:
    """The versions a traffic.json names (empty if it is missing or unreadable: the server
    reports a bad policy itself)."""
    try:
        data = json.loads(path.read_bytes())
        found = set(data.get("aliases", {}).values())
        for part in ("canary", "shadow"):
            if isinstance(data.get(part), dict):
                found.add(data[part].get("version"))
        return {v for v in found if type(v) is int}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _replace_file(path: Path, data: bytes) -> None:
    staged = path.with_name(f"{modelrepo.TMP_PREFIX}{os.getpid()}-{path.name}")
    modelrepo._write_file(staged, data)
    os.rename(staged, path)


# --- commands and training: a checked-out copy, written through -----------------------------


@dataclass
class _Checkout:
    """A bucket checked out into ``root``: the hooks modelrepo calls on each write."""

    store: S3Store
    root: Path
    policy_etags: dict[str, str | None] = field(default_factory=dict)

    def _model(self, model_dir: Path) -> str:
        return Path(model_dir).name

    def claim_version(self, model_dir: Path, at_least: int) -> int:
        return self.store.claim_version(self._model(model_dir), at_least)

    def version_written(self, model_dir: Path, number: int) -> None:
        version_dir = Path(model_dir) / str(number)
        files = {e.name: (version_dir / e.name).read_bytes() for e in os.scandir(version_dir)
                 if e.is_file(follow_symlinks=False)}
        self.store.upload_version(self._model(model_dir), number, files)

    def version_retired(self, model_dir: Path, number: int) -> None:
        self.store.retire(self._model(model_dir), number)

    def config_written(self, model_dir: Path) -> None:
        self.store.put(f"{self._model(model_dir)}/{modelrepo.CONFIG_FILE}",
                       (Path(model_dir) / modelrepo.CONFIG_FILE).read_bytes())

    def refresh_policy(self, model_dir: Path) -> None:
        """Fetch the model's traffic.json (and its ETag) again, into the checkout."""
        model = self._model(model_dir)
        try:
            data, etag = self.store.get(f"{model}/{POLICY_FILE}", 1 << 20)
        except FileNotFoundError:
            (Path(model_dir) / POLICY_FILE).unlink(missing_ok=True)
            self.policy_etags[model] = None
            return
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        _replace_file(Path(model_dir) / POLICY_FILE, data)
        self.policy_etags[model] = etag

    def policy_written(self, model_dir: Path) -> None:
        """Push traffic.json, conditional on the ETag it was read with. Raises StoreConflict."""
        model = self._model(model_dir)
        etag = self.policy_etags.get(model)
        data = (Path(model_dir) / POLICY_FILE).read_bytes()
        self.policy_etags[model] = self.store.put(
            f"{model}/{POLICY_FILE}", data, if_none_match=etag is None, if_match=etag)


def checkout(store: S3Store, root: Path) -> _Checkout:
    """Download the bucket's repository into ``root``: config.pbtxt, traffic.json, every
    complete and retired version, and an empty directory per incomplete number (so numbering
    skips it, and ``list`` shows it as incomplete). Raises StoreError."""
    listing = store.list_objects()
    done = _Checkout(store, root)
    for model in model_names(listing):
        model_dir = root / model
        model_dir.mkdir(parents=True)
        for name in (modelrepo.CONFIG_FILE, POLICY_FILE):
            if f"{model}/{name}" in listing:
                try:
                    data, etag = store.get(f"{model}/{name}", 1 << 20)
                except FileNotFoundError:
                    continue
                (model_dir / name).write_bytes(data)
                if name == POLICY_FILE:
                    done.policy_etags[model] = etag
        directories = {str(n): complete_versions(listing, model)[n]
                       for n in complete_versions(listing, model)}
        for number in retired_numbers(listing, model):
            directories[f"{modelrepo.RETIRED_PREFIX}{number}"] = _version_objects(
                listing, model, f"{modelrepo.RETIRED_PREFIX}{number}")
        for number in incomplete_versions(listing, model):
            (model_dir / str(number)).mkdir()
        for directory, objects in directories.items():
            (model_dir / directory).mkdir()
            for rel in objects:
                try:
                    data, _ = store.get(rel)
                except FileNotFoundError:  # retired or deleted since the listing
                    continue
                (model_dir / directory / rel.rsplit("/", 1)[1]).write_bytes(data)
    return done


def shown_location(location: str | os.PathLike[str]) -> str:
    """A repository setting as people write it (``s3://…`` even from a ``Path``)."""
    return str(parse(location)) if is_remote(location) else str(location)


def create_repository(location: str | os.PathLike[str]) -> bool:
    """Create the bucket of an ``s3://`` repository (in ``AWS_REGION``), or a directory's
    folder, if missing; whether it was created. Raises StoreError, RepositoryError."""
    if not is_remote(location):
        path = Path(location)
        existed = path.is_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create {location}: {exc.strerror}") from None
        return not existed
    store = S3Store(location)
    bucket = store.location.bucket
    from botocore.exceptions import ClientError

    try:
        with store._calling("looking for the bucket"):
            store.client.head_bucket(Bucket=bucket)
        return False
    except (StoreError, FileNotFoundError, ClientError):
        pass  # a missing bucket answers 404 (some stores 403): try to create it
    region = store.client.meta.region_name
    extra = {} if region in (None, "us-east-1") else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}
    with store._calling(f"creating bucket {bucket}"):
        store.client.create_bucket(Bucket=bucket, **extra)
    return True


def shown(path: Path) -> str:
    """How to name a path of a checkout to people: its place in the bucket (a checkout's
    temporary directory means nothing to them); any other path as it is."""
    for root, mirror in modelrepo._MIRRORS.items():
        if isinstance(mirror, _Checkout) and Path(path).is_relative_to(root):
            relative = Path(path).relative_to(root)
            return str(mirror.store) if relative == Path(".") else f"{mirror.store}/{relative}"
    return str(path)


@contextlib.contextmanager
def open_repository(location: str | os.PathLike[str]) -> Iterator[Path]:
    """The repository as a directory: ``location`` itself for a directory; for ``s3://``, a
    checkout in a temporary directory whose writes go through to the bucket (see the module
    docstring), removed afterwards. Raises StoreError."""
    if not is_remote(location):
        yield Path(location)
        return
    store = S3Store(location)
    with tempfile.TemporaryDirectory(prefix="softserve-checkout-") as tmp:
        root = Path(tmp) / "repository"
        root.mkdir()
        hooks = checkout(store, root)
        modelrepo._MIRRORS[root] = hooks
        try:
            yield root
        finally:
            modelrepo._MIRRORS.pop(root, None)


def default_cache_dir() -> Path:
    """Where a server keeps its view of a bucket when ``SOFTSERVE_CACHE_DIR`` is not set:
    ``$XDG_CACHE_HOME/softserve`` (``~/.cache/softserve``), else the temporary directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "softserve"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"softserve-cache-{os.getuid()}"


def view_dir(cache_dir: Path, location: Location) -> Path:
    """The view of one bucket/prefix inside the cache directory."""
    return Path(cache_dir) / "s3" / location.bucket / (location.prefix.rstrip("/") or "_root")
