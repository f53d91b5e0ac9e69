"""The model repository: the one contract between training and serving.

Layout (Triton's model-repository layout, so Triton or KServe can serve the same folder)::

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/model.onnx
    <repository>/<model>/<version>/metadata.json

Versions are positive integers without leading zeros; the highest complete one is "latest".
Every other name inside a model directory is ignored by readers: ``.tmp-*`` directories are
versions being written, ``retired-<N>`` directories are versions taken out of service (their
numbers are never reused; :func:`restore_version` brings one back under a new number).

This module is torch-free and imports nothing beyond the standard library, so the training job,
the server and the repository command-line tools all share exactly this code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
RETIRED_PREFIX = "retired-"
PLATFORM = "onnxruntime_onnx"
MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit for one ONNX file
MAX_METADATA_BYTES = 64 << 20
DEFAULT_REPOSITORY = "./artifacts"
REPOSITORY_ENV = "SOFTSERVE_MODEL_REPOSITORY"
DEFAULT_MODEL_ENV = "SOFTSERVE_DEFAULT_MODEL"  # the model behind POST /predict; see predict_model

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
CLASS = "class"

# The shapes a version may have: F features in, K classes out. Limits well above any tabular
# classifier, low enough that a metadata.json stays small and a config.pbtxt readable.
MAX_FEATURES = 65536
MAX_CLASSES = 10000
# What a version does with a missing feature value (JSON null, NaN in binary data): "refuse" it
# (a 400, as every version published before this key existed does) or "impute" it (its graph
# replaces NaN itself, so NaN is passed to it).
MISSING_VALUES = ("refuse", "impute")
MISSING_VALUES_KEY = "missing_values"
# Per-feature statistics of the training split, under metadata["data"] (optional: versions
# published before them have none). Made and read by ``modelrepo.drift``.
STATISTICS_KEY = "statistics"

# Iris's shape, for examples and documentation only (the training CLI's default data set):
# never a contract check.
IRIS_FEATURES = 4
IRIS_CLASSES = 3


def signature(n_features: int, n_classes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The V2 tensor metadata ``(inputs, outputs)`` of a version with F features and K classes.

    Input ``input`` FP32 ``[-1, F]``; outputs ``probabilities`` FP32 ``[-1, K]`` and ``class``
    INT64 ``[-1]``: what ``metadata.json`` must declare and ``model.onnx`` must match.
    Raises ValueError unless 1 <= F <= MAX_FEATURES and 2 <= K <= MAX_CLASSES (integers).
    """
    for value, low, high, what in ((n_features, 1, MAX_FEATURES, "features"),
                                   (n_classes, 2, MAX_CLASSES, "classes")):
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"a model has {low} to {high} {what}, got {value!r}")
    inputs = [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, n_features]}]
    outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, n_classes]},
               {"name": CLASS, "datatype": "INT64", "shape": [-1]}]
    return inputs, outputs


def imputes(metadata: Mapping[str, Any]) -> bool:
    """Whether a (checked) version's graph imputes missing values (``missing_values``)."""
    return bool(metadata.get(MISSING_VALUES_KEY, "refuse") == "impute")


_VERSION_RE = re.compile(r"[1-9][0-9]{0,17}")
_RETIRED_RE = re.compile(re.escape(RETIRED_PREFIX) + r"([1-9][0-9]{0,17})")
# Model names reach URLs and the filesystem: a conservative alphabet, no path separators,
# no leading dot (so never "." or "..").
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
# Names a model cannot be published under because a route already owns the URL its metadata
# would live at: ``GET /v2/models/stats`` is Triton's statistics route (of every model), so a
# model named "stats" could never be reached at ``GET /v2/models/<name>``. Checked only when
# publishing: a directory of such a name made by hand is still listed, just not reachable there.
RESERVED_MODEL_NAMES: frozenset[str] = frozenset({"stats"})

# Keys metadata.json must hold, with the JSON type each must have.
REQUIRED_METADATA: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "version": int,
    "created_at": str,
    "feature_names": list,
    "class_labels": list,
    "inputs": list,
    "outputs": list,
    "model": dict,
    "libraries": dict,
    "data": dict,
    "training": dict,
    "loss_curve": list,
    "metrics": dict,
    "parity": dict,
}


class RepositoryError(Exception):
    """A problem with the repository itself (unusable path, bad model name)."""


class StoreConflict(RepositoryError):
    """A conditional write to object storage lost to another writer (``modelrepo.storage``)."""


class BrokenVersion(Exception):
    """A version directory that must not be served; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Mirror(Protocol):
    """A remote store a local directory mirrors (``modelrepo.storage``): each write the
    directory code makes goes through to it as it happens."""

    def claim_version(self, model_dir: Path, at_least: int) -> int: ...
    def version_written(self, model_dir: Path, number: int) -> None: ...
    def version_retired(self, model_dir: Path, number: int) -> None: ...
    def config_written(self, model_dir: Path) -> None: ...
    def refresh_policy(self, model_dir: Path) -> None: ...
    def policy_written(self, model_dir: Path) -> None: ...


# Repository root (a checkout of a bucket) -> its store; empty for a plain directory, so the
# directory code's behaviour is unchanged then.
_MIRRORS: dict[Path, Mirror] = {}


def _mirror_of(model_dir: Path) -> Mirror | None:
    return _MIRRORS.get(Path(model_dir).parent) if _MIRRORS else None


def default_repository() -> Path:
    """The repository path: ``SOFTSERVE_MODEL_REPOSITORY``, else ``./artifacts``."""
    return Path(os.environ.get(REPOSITORY_ENV) or DEFAULT_REPOSITORY)


def is_model_name(name: str) -> bool:
    """Whether ``name`` is safe as a model directory name (reserved names included: readers
    list every model directory there is)."""
    return _MODEL_NAME_RE.fullmatch(name) is not None


def check_model_name(name: str, *, publishing: bool = True) -> str:
    """Return ``name`` if a model may have it.

    ``publishing`` (the default) also refuses :data:`RESERVED_MODEL_NAMES`; readers and tools
    that only look at or retire existing versions pass False. Raises RepositoryError.
    """
    if not is_model_name(name):
        raise RepositoryError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if publishing and name in RESERVED_MODEL_NAMES:
        raise RepositoryError(
            f"model name {name!r} is reserved: GET /v2/models/{name} is the server's "
            f"statistics route, so a model named {name!r} could not be reached; choose "
            f"another name, e.g. {name}-model"
        )
    return name


def parse_version(name: str) -> int | None:
    """The version number a directory name stands for, or None if it is not a version."""
    return int(name) if _VERSION_RE.fullmatch(name) else None


def model_names(repository: Path) -> list[str]:
    """Names of the model directories in the repository, sorted. Missing repository: []."""
    try:
        entries = list(os.scandir(repository))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.is_dir() and is_model_name(e.name))


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """Integer-named subdirectories of a model directory (complete or broken), by number."""
    try:
        entries = list(os.scandir(model_dir))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found: dict[int, Path] = {}
    for entry in entries:
        number = parse_version(entry.name)
        if number is not None and entry.is_dir():
            found[number] = Path(entry.path)
    return dict(sorted(found.items()))


def retired_versions(model_dir: Path) -> list[int]:
    """Numbers of the versions retired out of the integer namespace, sorted."""
    try:
        names = os.listdir(model_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for n in names if (m := _RETIRED_RE.fullmatch(n)))


def highest_version_used(model_dir: Path) -> int:
    """The highest version number ever used for a model (live, broken or retired); 0 if none."""
    return max([0, *version_dirs(model_dir), *retired_versions(model_dir)])


def model_config(model_name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                 keep_versions: int | None = None) -> dict[str, Any]:
    """Triton's model configuration (its ``ModelConfig`` message) as JSON, for one version.

    ``max_batch_size: 0`` with an explicit ``-1`` batch dimension: the graph batches itself,
    so Triton passes whole requests through as they are. ``inputs``/``outputs`` are a version's
    V2 tensor metadata (see :func:`signature`); ``keep_versions`` adds the version policy a
    server applies (its newest N valid versions).
    """

    def tensor(spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"name": spec["name"], "data_type": f"TYPE_{spec['datatype']}",
                "dims": list(spec["shape"])}

    config: dict[str, Any] = {"name": model_name, "platform": PLATFORM,
                              "backend": "onnxruntime", "max_batch_size": 0}
    if keep_versions is not None:
        config["version_policy"] = {"latest": {"num_versions": keep_versions}}
    config["input"] = [tensor(s) for s in inputs]
    config["output"] = [tensor(s) for s in outputs]
    return config


def config_pbtxt(model_name: str, inputs: list[dict[str, Any]],
                 outputs: list[dict[str, Any]]) -> str:
    """``model_config`` in protobuf text format, as Triton reads ``config.pbtxt``."""

    def tensor(spec: Mapping[str, Any]) -> str:
        dims = ", ".join(str(d) for d in spec["dims"])
        return (
            f'  {{\n    name: "{spec["name"]}"\n    data_type: {spec["data_type"]}\n'
            f"    dims: [ {dims} ]\n  }}"
        )

    config = model_config(model_name, inputs, outputs)
    sep = ",\n"
    return (
        f'name: "{model_name}"\nplatform: "{PLATFORM}"\nmax_batch_size: 0\n'
        f"input [\n{sep.join(tensor(s) for s in config['input'])}\n]\n"
        f"output [\n{sep.join(tensor(s) for s in config['output'])}\n]\n"
    )


def _check_names(values: list[Any], what: str, low: int, high: int, path: Path) -> None:
    """``values`` is a list of ``low`` to ``high`` unique strings. Raises BrokenVersion."""
    if not low <= len(values) <= high or not all(type(v) is str for v in values):
        raise BrokenVersion(path, f"{METADATA_FILE}: {what} must be {low} to {high} strings, "
                                  f"got {len(values)} values")
    if len(set(values)) != len(values):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise BrokenVersion(path, f"{METADATA_FILE}: {what} must be unique, "
                                          f"{value!r} repeats")
            seen.add(value)


def check_statistics(statistics: Any, feature_names: Sequence[str]) -> str | None:
    """What is wrong with a ``data.statistics`` record for these features, or None if it is
    usable: one entry per feature, in order, each with sorted edges and len(edges) + 1
    fractions."""
    if not isinstance(statistics, dict) or not isinstance(statistics.get("features"), list):
        return "data.statistics must be an object with a \"features\" list"
    features = statistics["features"]
    if len(features) != len(feature_names):
        return (f"data.statistics has {len(features)} features, the model "
                f"{len(feature_names)}")
    for entry, name in zip(features, feature_names):
        if not isinstance(entry, dict) or entry.get("name") != name:
            return f"data.statistics: the entry for feature {name!r} is missing or misplaced"
        edges, fractions = entry.get("edges"), entry.get("fractions")
        if not isinstance(edges, list) or not isinstance(fractions, list) or \
                len(fractions) != len(edges) + 1 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in [*edges, *fractions]) or \
                any(b <= a for a, b in zip(edges, edges[1:])):
            return (f"data.statistics: feature {name!r} needs increasing finite \"edges\" and "
                    "one more \"fractions\" than edges")
        for key in ("min", "max"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, (int, float)) or
                                      isinstance(value, bool) or not math.isfinite(value)):
                return f"data.statistics: feature {name!r}: {key} must be a finite number"
    return None


def check_metadata(metadata: Any, path: Path, version: int | None = None) -> dict[str, Any]:
    """Validate a parsed metadata.json against the schema. Raises BrokenVersion.

    The shape is the version's own: F = len(feature_names) (1 to MAX_FEATURES unique strings),
    K = len(class_labels) (2 to MAX_CLASSES unique strings), and ``inputs``/``outputs`` must be
    :func:`signature` (F, K). ``missing_values``, if present, is "refuse" or "impute";
    ``data.statistics``, if present, passes :func:`check_statistics`.
    """
    if not isinstance(metadata, dict):
        raise BrokenVersion(path, f"{METADATA_FILE} is not a JSON object")
    for key, kind in REQUIRED_METADATA.items():
        if key not in metadata:
            raise BrokenVersion(path, f"{METADATA_FILE} lacks {key!r}")
        if not isinstance(metadata[key], kind) or isinstance(metadata[key], bool):
            raise BrokenVersion(path, f"{METADATA_FILE}: {key!r} has the wrong type")
    if version is not None and metadata["version"] != version:
        raise BrokenVersion(
            path, f"{METADATA_FILE} says version {metadata['version']}, directory says {version}"
        )
    names, labels = metadata["feature_names"], metadata["class_labels"]
    _check_names(names, "feature_names", 1, MAX_FEATURES, path)
    _check_names(labels, "class_labels", 2, MAX_CLASSES, path)
    if [metadata["inputs"], metadata["outputs"]] != list(signature(len(names), len(labels))):
        raise BrokenVersion(
            path, f"{METADATA_FILE}: tensor signature differs from the contract for "
                  f"{len(names)} features and {len(labels)} classes (input FP32 "
                  f"[-1, {len(names)}], outputs FP32 [-1, {len(labels)}] and INT64 [-1])")
    missing = metadata.get(MISSING_VALUES_KEY, "refuse")
    if type(missing) is not str or missing not in MISSING_VALUES:
        raise BrokenVersion(path, f"{METADATA_FILE}: {MISSING_VALUES_KEY!r} must be "
                                  f"{' or '.join(map(repr, MISSING_VALUES))}")
    if not isinstance(metadata["model"].get("sha256"), str):
        raise BrokenVersion(path, f"{METADATA_FILE}: model.sha256 is missing")
    if STATISTICS_KEY in metadata["data"]:
        problem = check_statistics(metadata["data"][STATISTICS_KEY], names)
        if problem:
            raise BrokenVersion(path, f"{METADATA_FILE}: {problem}")
    return metadata


def _read_regular_file(version_dir: Path, name: str, limit: int) -> bytes:
    """A version file's bytes, refusing anything but a regular file of at most ``limit`` bytes.

    Opened non-blocking and checked with fstat before reading: a FIFO would block a reader
    forever and /dev/zero would never end. Raises BrokenVersion.
    """
    try:
        fd = os.open(version_dir / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BrokenVersion(version_dir, f"{name} is missing") from None
    except OSError as exc:
        raise BrokenVersion(version_dir, f"{name} is unreadable: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BrokenVersion(version_dir, f"{name} is not a regular file")
        if st.st_size > limit:
            raise BrokenVersion(version_dir, f"{name} is {st.st_size} bytes, over {limit}")
        chunks = []
        remaining = st.st_size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise BrokenVersion(version_dir, f"{name} is unreadable: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_version(version_dir: Path) -> tuple[dict[str, Any], bytes]:
    """Read and verify one version: metadata checked, model bytes matching their sha256.

    Raises BrokenVersion with the reason if any file is missing, unreadable, not a regular
    file, too large or inconsistent.
    """
    version = parse_version(version_dir.name)
    raw = _read_regular_file(version_dir, METADATA_FILE, MAX_METADATA_BYTES)
    try:
        metadata = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BrokenVersion(version_dir, f"{METADATA_FILE} is not valid JSON: {exc}") from None
    check_metadata(metadata, version_dir, version)
    model_bytes = _read_regular_file(version_dir, MODEL_FILE, MAX_MODEL_BYTES)
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != metadata["model"]["sha256"]:
        raise BrokenVersion(
            version_dir,
            f"{MODEL_FILE} sha256 {actual[:12]}… does not match metadata "
            f"{metadata['model']['sha256'][:12]}…",
        )
    return metadata, model_bytes


@contextlib.contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    """Hold the model directory's writer lock (an flock; released if the holder dies)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(model_dir: Path) -> list[str]:
    """Remove ``.tmp-<pid>-*`` directories whose writer process is gone. Returns their names.

    Call with the model lock held. A writer that was killed mid-write leaves one behind; it was
    never visible as a version, and nothing else can finish it.
    """
    removed = []
    for name in os.listdir(model_dir):
        if not name.startswith(TMP_PREFIX):
            continue
        pid_text = name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and pid_alive(int(pid_text)):
            continue
        path = model_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(name)
    return removed


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Published:
    model: str
    version: int
    path: Path


def publish_version(
    repository: Path,
    model_name: str,
    model_bytes: bytes,
    metadata: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> Published:
    """Publish a new version of ``model_name``: next number, written whole, renamed into place.

    The number is the highest ever used plus one, claimed under the model's lock, so racing
    publishers never share one. ``metadata`` gets ``name``, ``version`` and ``model.sha256``
    filled in and is checked against the schema before anything becomes visible.
    Raises RepositoryError for a bad (or reserved) name or an unusable repository;
    BrokenVersion if the metadata does not satisfy the contract.
    """
    model_dir = _model_dir_for_writing(repository, model_name)
    with model_lock(model_dir):
        version = _write_next_version(model_dir, model_name, model_bytes, metadata, extra_files)
    return Published(model_name, version, model_dir / str(version))


def _model_dir_for_writing(repository: Path, model_name: str) -> Path:
    """The model's directory, created 0755 if missing. Raises RepositoryError."""
    check_model_name(model_name)
    model_dir = Path(repository) / model_name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(model_dir, 0o755)
    except OSError as exc:
        raise RepositoryError(f"cannot use repository {repository}: {exc.strerror}") from None
    return model_dir


def _write_next_version(
    model_dir: Path,
    model_name: str,
    model_bytes: bytes,
    metadata: dict[str, Any],
    extra_files: Mapping[str, bytes] | None,
) -> int:
    """Write the next version under a temporary name and rename it into place; its number.

    Call with the model lock held. Raises BrokenVersion if the metadata breaks the contract
    (nothing is left behind), OSError if the disk refuses.
    """
    clean_stale_temporaries(model_dir)
    version = highest_version_used(model_dir) + 1
    mirror = _mirror_of(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a non-root server must read it
        record = {
            **metadata,
            "name": model_name,
            "version": version,
            "model": {**metadata.get("model", {}), "file": MODEL_FILE,
                      "sha256": hashlib.sha256(model_bytes).hexdigest(),
                      "bytes": len(model_bytes)},
        }
        check_metadata(record, tmp, version)
        if mirror is not None:  # object storage: claim the number there (a race moves it on)
            version = mirror.claim_version(model_dir, version)
            record["version"] = version
        _write_file(tmp / MODEL_FILE, model_bytes)
        for name, data in (extra_files or {}).items():
            _write_file(tmp / name, data)
        _write_file(tmp / METADATA_FILE, json.dumps(record, indent=2).encode() + b"\n")
        _fsync_dir(tmp)
        _write_config(model_dir, model_name, record["inputs"], record["outputs"])
        os.rename(tmp, model_dir / str(version))
        _fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if mirror is not None:  # files first, the marker (metadata.json) last
        mirror.version_written(model_dir, version)
    return version


def _write_config(model_dir: Path, model_name: str, inputs: list[dict[str, Any]],
                  outputs: list[dict[str, Any]]) -> None:
    """Make ``config.pbtxt`` describe these tensors: written at a model's first publish, and
    rewritten whole (staged, then renamed over it: Triton reads it) when a version of another
    shape is published. Call with the model lock held. Raises OSError."""
    config = model_dir / CONFIG_FILE
    text = config_pbtxt(model_name, inputs, outputs).encode()
    try:  # the same checks as a version's files: a FIFO must not block a publisher
        if _read_regular_file(model_dir, CONFIG_FILE, len(text)) == text:
            return
    except BrokenVersion:  # missing, unreadable, another size: write it
        pass
    staged = model_dir / f"{TMP_PREFIX}{CONFIG_FILE}"
    _write_file(staged, text)
    os.rename(staged, config)
    if (mirror := _mirror_of(model_dir)) is not None:
        mirror.config_written(model_dir)


def restore_version(repository: Path, model_name: str, retired: int) -> Published:
    """Bring retired version ``retired`` back into service as the next version number.

    The retired directory's files are verified (sha256 included) and copied, never moved: the
    retired version stays as it is and its number is not reused, so the restored copy gets
    the highest number ever used plus one and becomes latest. Its metadata gets the new
    ``version`` and ``restored_from`` (the retired number and when); ``created_at`` stays the
    training time. Numbering, the copy and the rename happen under the model lock, written
    like :func:`publish_version`.
    Raises RepositoryError if the model or the retired version does not exist (or the name
    may not be published); BrokenVersion if the retired version fails verification.
    """
    check_model_name(model_name)
    model_dir = Path(repository) / model_name
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {model_name!r} in {repository}")
    with model_lock(model_dir):
        source = model_dir / f"{RETIRED_PREFIX}{retired}"
        if not source.is_dir() or source.is_symlink():
            in_service = retired in version_dirs(model_dir)
            raise RepositoryError(
                f"{model_name} version {retired} is "
                + ("in service, not retired" if in_service else "not a retired version")
                + f" (retired: {', '.join(map(str, retired_versions(model_dir))) or 'none'})")
        metadata, model_bytes = read_version(source)
        extra: dict[str, bytes] = {}
        for entry in os.scandir(source):
            if entry.name in (MODEL_FILE, METADATA_FILE):
                continue
            # Only regular files are part of a version; anything else is not copied.
            if entry.is_file(follow_symlinks=False):
                extra[entry.name] = _read_regular_file(source, entry.name, MAX_METADATA_BYTES)
        metadata["restored_from"] = {
            "version": retired,
            "restored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        version = _write_next_version(model_dir, model_name, model_bytes, metadata, extra)
    return Published(model_name, version, model_dir / str(version))


def _first_created_at(model_dir: Path) -> dt.datetime | None:
    """``created_at`` of the model's oldest readable version (live or retired), or None.

    Versions are numbered in publish order, so the lowest number whose metadata.json is a
    readable JSON object with a parseable ``created_at`` is the oldest; broken ones are skipped.
    """
    numbers = {n: model_dir / str(n) for n in version_dirs(model_dir)}
    for n in retired_versions(model_dir):
        numbers.setdefault(n, model_dir / f"{RETIRED_PREFIX}{n}")
    for _, path in sorted(numbers.items()):
        try:
            metadata = json.loads(_read_regular_file(path, METADATA_FILE, MAX_METADATA_BYTES))
            created = dt.datetime.fromisoformat(metadata["created_at"])
        except (BrokenVersion, ValueError, RecursionError, TypeError, KeyError):
            continue
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.timezone.utc)  # ours are UTC; compare alike
        return created
    return None


def predict_model(repository: Path, configured: str | None) -> str | None:
    """The model behind ``POST /predict``.

    ``configured`` (``SOFTSERVE_DEFAULT_MODEL``) when given and not empty, as it is; otherwise
    the model published first: the one whose oldest version (live or retired) has the
    earliest ``created_at``, ties broken by name. Only metadata.json files are read; a version
    whose metadata cannot be read is skipped, a model with none readable is not a candidate.
    None when there is no candidate. Raises nothing for a missing or unreadable repository.
    """
    if configured:
        return configured
    firsts = []
    try:
        names = model_names(repository)
    except OSError:  # not a directory, no permission: no model to serve either
        return None
    for name in names:
        try:
            created = _first_created_at(Path(repository) / name)
        except OSError:  # an unreadable model directory is no candidate
            continue
        if created is not None:
            firsts.append((created, name))
    return min(firsts)[1] if firsts else None


def retire_version(model_dir: Path, version: int) -> Path:
    """Rename a version out of the integer namespace (``retired-<N>``); never deletes.

    ``config.pbtxt`` then describes the highest valid version left (versions may differ in
    shape). Call with the model lock held. Raises RepositoryError if the version does not
    exist; OSError if the disk refuses.
    """
    source = model_dir / str(version)
    target = model_dir / f"{RETIRED_PREFIX}{version}"
    try:
        os.rename(source, target)
    except FileNotFoundError:
        raise RepositoryError(f"{source} does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise RepositoryError(f"{target} already exists") from None
        raise
    _fsync_dir(model_dir)
    if (mirror := _mirror_of(model_dir)) is not None:
        mirror.version_retired(model_dir, version)
    for _, path in sorted(version_dirs(model_dir).items(), reverse=True):
        try:
            metadata, _ = read_version(path)
        except BrokenVersion:
            continue
        _write_config(model_dir, model_dir.name, metadata["inputs"], metadata["outputs"])
        break
    return target
