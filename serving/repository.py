"""The served view of the model repository: scan, load, swap — and keep serving on trouble.

Each worker owns one :class:`ModelRepository`. A scan builds a new immutable snapshot (model
name -> :class:`ModelState`) and swaps it in with one reference assignment, so a request that
already holds a :class:`LoadedModel` finishes on it, while the next request sees the new one.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelrepo
from modelrepo import BrokenVersion, RepositoryError, storage
from modelrepo.policy import POLICY_FILE, PRODUCTION, Policy, PolicyError, read_policy
from serving.config import PREFIX
from serving.errors import ModelNotFound, ModelNotReady
from serving.model import LoadedModel
from serving.telemetry import Telemetry

log = logging.getLogger("softserve.repository")

# What identifies a version directory's content without reading it: the directory's inode and
# the size and mtime of its two files. Published versions are immutable; a change means a
# different version (or someone editing it in place, which we then re-check).
Fingerprint = tuple[int, ...]


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        parts: list[int] = [os.stat(path).st_ino]
        for name in (modelrepo.MODEL_FILE, modelrepo.METADATA_FILE):
            try:
                st = os.stat(path / name)
                parts += [st.st_ino, st.st_size, st.st_mtime_ns]
            except FileNotFoundError:
                parts += [0, -1, 0]
        return tuple(parts)
    except OSError:
        return None


# Issue 20: with 100 models of 10 version directories each, a scan that lists every model
# directory and stats every kept version's files cost ~10-15 ms of CPU per worker per poll (0.5 %
# of a core each at the 2 s poll). A model's directory changes (mtime and ctime) whenever a
# version, traffic.json or config.pbtxt is added, renamed or removed there, as every publish,
# retire, restore and policy write does; traffic.json may also be edited in place, so it has
# its own stat. When both are as the last full look at the model saw them, its state is kept
# without listing or stating anything else: two stats a model. File times are coarse (a kernel
# tick), so a directory changed less than RACY_SECONDS before it was looked at may change again
# with the same times: it is not trusted, and looked at in full again next poll. A version's
# own files written in place change neither: a refused version's files are stat'ed every poll
# (one copied in place is refused while incomplete, loaded once complete), and every
# FULL_SCAN_EVERY-th scan (30 s at the default poll) looks at everything.
RACY_SECONDS = 1.0
FULL_SCAN_EVERY = 15


def _model_fingerprint(model_dir: Path,
                       racy_seconds: float = RACY_SECONDS) -> tuple[Fingerprint, bool] | None:
    """(what identifies the model directory's listing and its traffic.json, whether that can be
    trusted to change with them: not changed within ``racy_seconds``), or None if the directory
    cannot be stat'ed."""
    try:
        st = os.stat(model_dir)
    except OSError:
        return None
    parts = [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
    try:
        policy = os.stat(model_dir / POLICY_FILE)
        parts += [policy.st_ino, policy.st_size, policy.st_mtime_ns, policy.st_ctime_ns]
        newest = max(st.st_mtime_ns, st.st_ctime_ns, policy.st_mtime_ns, policy.st_ctime_ns)
    except FileNotFoundError:
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None
    return tuple(parts), time.time_ns() - newest > racy_seconds * 1e9


# Issue 12: requests did not stall on a load itself but on the garbage collection it set off.
# A load holds the GIL only briefly (bench/switch.py --in-process, 2-vCPU VM: json.loads of the
# 106 kB metadata 0.6-1.2 ms, InferenceSession creation ~0.5 ms — onnxruntime 1.32 holds the GIL
# there —, the first run ~0.1 ms; ~2.5 ms in all). But each load leaves a few hundred tracked
# allocations, and within a few switches (the 7th publish in bench/switch.py's runs) they set
# off the worker's first full collection. It walks the whole heap (~45,000 objects of Flask,
# numpy, onnxruntime, prometheus-client) with the GIL held: 19-44 ms in the watcher thread with
# the server at real-time priority, 36-84 ms without; the issue's ~60 ms. Frozen after the first
# scan (at boot, before the worker serves), that heap is never walked again: a full collection
# walks the ~3,000 objects made since, ~1 ms. Worst request during 60 switches under 1000 req/s
# (`python -m bench.switch --switches 60 --realtime 10`, 3 runs each): 36, 45, 33 ms before;
# 16, 4.8, 34 ms after (that run also stalled every client for 29 ms outside any switch).
_heap_frozen = False


def _freeze_heap_once() -> None:
    """Collect once, then move every surviving object to the permanent generation (gc.freeze),
    so later collections never walk the heap this process was built with.

    The first scan runs when a worker builds its app, before it serves: the one slow collection
    happens there. Objects made later stay under the collector; the versions that scan loaded
    are frozen, but a LoadedModel is in no reference cycle, so unloading still frees it.
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def _sticky_bucket(model: str, value: str) -> float:
    """Where a sticky header's value falls in [0, 1): the same in every worker and process
    (a hash, not Python's salted ``hash``), and independent of the percent, so raising a
    canary's share only adds clients to it."""
    digest = hashlib.blake2b(f"{model}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


@dataclass(frozen=True)
class Traffic:
    """Where a model's requests that name no version go, as its policy says (built per scan
    from the versions actually loaded: a part naming anything else is already dropped)."""

    default: LoadedModel  # production, else the latest version
    target: str  # "production" or "latest": how ``default`` was chosen
    canary: LoadedModel | None = None
    canary_share: float = 0.0  # 0..1
    sticky_environ: str | None = None  # the canary's sticky header, as a WSGI environ key
    shadow: LoadedModel | None = None
    shadow_share: float = 0.0

    def choose(self, environ: dict[str, Any]) -> tuple[LoadedModel, str]:
        """(the version to answer with, "canary" or ``target``): the canary with its share —
        by the sticky header's hash when the request carries it, else by a per-worker random
        draw — else the default."""
        canary = self.canary
        if canary is not None:
            value = environ.get(self.sticky_environ) if self.sticky_environ else None
            draw = _sticky_bucket(canary.name, value) if value else random.random()
            if draw < self.canary_share:
                return canary, "canary"
        return self.default, self.target

    def shadows(self) -> bool:
        """Whether this request's answer is mirrored to the shadow version."""
        return self.shadow is not None and (self.shadow_share >= 1.0
                                            or random.random() < self.shadow_share)


@dataclass(frozen=True)
class ModelState:
    """One model as this worker serves it."""

    name: str
    loaded: dict[int, LoadedModel]  # the newest valid versions, up to keep_versions
    broken: dict[int, str]  # version -> reason it is refused
    on_disk: tuple[int, ...]  # every integer version directory, loaded or not
    # The traffic policy (modelrepo.policy) as it applies: None when the model has none, so
    # the request path costs one attribute test then.
    traffic: Traffic | None = None
    aliases: dict[str, LoadedModel] = field(default_factory=dict)  # the aliases that serve
    alias_problems: dict[str, str] = field(default_factory=dict)  # alias -> why it does not
    policy: Policy = field(default_factory=Policy)

    # A state is built once per scan and read by every request: work these out once.
    @functools.cached_property
    def latest(self) -> LoadedModel | None:
        return self.loaded[max(self.loaded)] if self.loaded else None

    @functools.cached_property
    def serving(self) -> LoadedModel | None:
        """What a request naming no version gets (before any canary): production, else the
        latest version."""
        return self.traffic.default if self.traffic is not None else self.latest

    @functools.cached_property
    def versions(self) -> list[str]:
        return [str(v) for v in sorted(self.loaded)]


@dataclass
class _Cache:
    """What the last scan saw, so an unchanged repository costs only directory listings."""

    loaded: dict[tuple[str, int], tuple[Fingerprint | None, LoadedModel]] = field(
        default_factory=dict)
    broken: dict[tuple[str, int], tuple[Fingerprint | None, str]] = field(default_factory=dict)
    # model -> (traffic.json's fingerprint, the last good policy); and the problems logged
    policies: dict[str, tuple[Fingerprint | None, Policy]] = field(default_factory=dict)
    policy_problems: dict[str, set[str]] = field(default_factory=dict)
    # model -> its directory's fingerprint at the last full look, when it can be trusted
    models: dict[str, Fingerprint] = field(default_factory=dict)
    scans: int = 0
    versions_loaded: dict[str, int] = field(default_factory=dict)  # as last reported


class ModelRepository:
    # A model directory changed less than this long before a scan is looked at in full again
    # at the next one (see RACY_SECONDS).
    racy_seconds = RACY_SECONDS

    def __init__(self, root: Path, keep_versions: int = 3,
                 telemetry: Telemetry | None = None, default_model: str | None = None,
                 cache_dir: Path | None = None) -> None:
        # s3://bucket/prefix: each scan lists the bucket and brings what changed into a local
        # view (modelrepo.storage.S3Store.sync_view), which is then scanned as a directory.
        self.store: storage.S3Store | None = None
        self.store_problem: str | None = None  # why the store did not answer, while it does not
        self._listing: str | None = None  # the fingerprint of the last listing synced
        if storage.is_remote(root):
            self.store = storage.S3Store(root)
            root = storage.view_dir(cache_dir or storage.default_cache_dir(),
                                    self.store.location)
        self.root = Path(root)
        self.default_model = default_model
        self.predict_model: str | None = default_model
        self.telemetry = telemetry
        self.keep_versions = keep_versions
        self._models: dict[str, ModelState] = {}
        self._cache = _Cache()
        self._scanned = False
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # --- reading (request path) -------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelState]:
        return self._models

    def ready(self) -> tuple[bool, str]:
        """(ready, reason). Ready once scanned, when at least one model serves a version."""
        models = self._models
        if not self._scanned:
            return False, "the model repository has not been scanned yet"
        if not any(m.loaded for m in models.values()):
            if self.store_problem is not None:  # nothing cached and the store does not answer
                return False, self.store_problem.replace(": serving the versions loaded", "")
            if not models:  # the setting, never the path: clients must not learn the layout
                return False, f"no model in the model repository ({PREFIX}MODEL_REPOSITORY)"
            return False, "no model has a valid version: " + "; ".join(
                f"{m.name}: {self._broken_text(m)}" for m in models.values())
        if self.store_problem is not None:
            return True, self.store_problem
        return True, "ready"

    def state(self, name: str) -> ModelState:
        """Raises ModelNotFound for a model the repository does not have."""
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; models served: {known}") from None

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to run: what a request naming no version gets (``ModelState.serving``:
        production, else the latest version), or the version number or alias asked for.

        Raises ModelNotFound (unknown model or version, or a version not loaded) and
        ModelNotReady (a model or version that exists but is broken).
        """
        state = self.state(name)
        if version is None:
            if state.serving is None:
                raise ModelNotReady(f"model {name!r} has no valid version: "
                                    + self._broken_text(state))
            return state.serving
        number = modelrepo.parse_version(version)
        if number is None:  # not a number: an alias
            if version in state.aliases:
                return state.aliases[version]
            if version in state.alias_problems:
                raise ModelNotReady(f"model {name!r} alias {version!r} is not served: "
                                    f"{state.alias_problems[version]}")
        if number is not None and number in state.loaded:
            return state.loaded[number]
        if number is not None and number in state.broken:
            raise ModelNotReady(f"model {name!r} version {version} is broken and not served: "
                                f"{state.broken[number]}")
        if number is not None and number in state.on_disk:
            raise ModelNotFound(f"model {name!r} version {version} is not loaded (only the newest "
                                f"{self.keep_versions} valid versions are); loaded: "
                                f"{', '.join(state.versions) or 'none'}")
        aliases = f"; aliases: {', '.join(sorted(state.aliases))}" if state.aliases else ""
        raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: "
                            f"{', '.join(state.versions) or 'none'}{aliases}")

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model and version directory, with its state.

        READY for a loaded version; UNAVAILABLE with the reason for a broken one, one older than
        the kept versions, or a model with no version at all.
        """
        entries: list[dict[str, str]] = []
        for name, state in sorted(self._models.items()):
            if not state.on_disk:
                entries.append({"name": name, "state": "UNAVAILABLE",
                                "reason": "no version directories"})
            for number in state.on_disk:
                if number in state.loaded:
                    state_text, reason = "READY", ""
                elif number in state.broken:
                    state_text, reason = "UNAVAILABLE", f"broken: {state.broken[number]}"
                else:
                    state_text, reason = "UNAVAILABLE", (
                        f"not loaded: only the newest {self.keep_versions} valid versions are "
                        f"({PREFIX}KEEP_VERSIONS)")
                entries.append({"name": name, "version": str(number), "state": state_text,
                                "reason": reason})
        return entries

    @staticmethod
    def _broken_text(state: ModelState) -> str:
        return "; ".join(f"version {v}: {r}" for v, r in sorted(state.broken.items())) or \
            "no version directories"

    # --- scanning ---------------------------------------------------------------------------

    def scan(self) -> None:
        """Look at the repository once and swap in what changed. Never raises for bad content.

        An unreadable or missing repository keeps everything already loaded. The process's
        first scan also freezes its heap (see ``_freeze_heap_once``).
        """
        self._scan()
        _freeze_heap_once()

    def _sync_store(self) -> None:
        """Bring the bucket's changes into the view: one listing; downloads only when it
        differs from the last one synced. An unreachable store keeps the view (and what is
        loaded) as it is, logged once per outage and reported by ``ready``."""
        assert self.store is not None
        try:
            listing = self.store.list_objects()
            fingerprint = storage.listing_fingerprint(listing)
            if fingerprint != self._listing:
                self.store.sync_view(self.root, self.keep_versions, listing)
                self._listing = fingerprint
        except (RepositoryError, OSError) as exc:
            if self.store_problem is None:
                log.warning("%s; keeping the %d model(s) loaded serving, retrying every poll",
                            exc, len(self._models), extra={"reason": str(exc)})
                what = "refuses the credentials" if "credentials" in str(exc) else \
                    "does not answer"
                self.store_problem = (
                    f"the model store ({PREFIX}MODEL_REPOSITORY) {what} since "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: serving the "
                    "versions loaded")
            return
        if self.store_problem is not None:
            log.warning("the model store answers again")
            self.store_problem = None

    def _scan(self) -> None:
        with self._scan_lock:
            if self.store is not None:
                self._sync_store()
            try:
                names = modelrepo.model_names(self.root) if self.root.is_dir() else None
            except OSError as exc:
                names = None
                log.warning("cannot list the model repository %s: %s", self.root, exc)
            if names is None:
                if not self._scanned or self._models:
                    log.warning("model repository %s is missing or unreadable; keeping %d "
                                "loaded model(s)", self.root, len(self._models))
                self._scanned = True
                return
            if self.predict_model not in names or set(names) != set(self._models):
                # The model behind /predict: the configured one, else the first published —
                # so a new model never takes /predict from the one its clients use. Decided
                # again when the models change, or while undecided (e.g. its directory was
                # unreadable when this worker started).
                self.predict_model = modelrepo.predict_model(self.root, self.default_model)
            self._cache.scans += 1
            full = self._cache.scans % FULL_SCAN_EVERY == 0
            self._models = {name: self._scan_model(name, full) for name in names}
            if self.telemetry is not None:
                counts = {k[0]: 0 for k in self._cache.loaded}  # models gone report 0
                counts.update({n: len(m.loaded) for n, m in self._models.items()})
                if counts != self._cache.versions_loaded:  # 100 gauges a poll otherwise
                    self.telemetry.versions_loaded(counts)
                    self._cache.versions_loaded = counts
            for cache in (self._cache.loaded, self._cache.broken):
                for key in [k for k in cache if k[0] not in self._models]:
                    del cache[key]
            for gone in set(self._cache.policies) - set(self._models):
                del self._cache.policies[gone]
            for gone in set(self._cache.models) - set(self._models):
                del self._cache.models[gone]
            self._scanned = True

    def _scan_model(self, name: str, full: bool = True) -> ModelState:
        """The model's state: the last one if its directory and traffic.json are unchanged
        since the last full look (and ``full`` is False), else looked at in full."""
        model_dir = self.root / name
        # before the listing: a change after it shows
        seen = _model_fingerprint(model_dir, self.racy_seconds)
        previous = self._models.get(name)
        if (not full and seen is not None and previous is not None
                and self._cache.models.get(name) == seen[0]
                and not self._broken_changed(name, model_dir, previous)):
            return previous
        self._cache.models.pop(name, None)
        state, listed = self._scan_model_fully(name, model_dir)
        if listed and seen is not None and seen[1]:
            self._cache.models[name] = seen[0]
        return state

    def _broken_changed(self, name: str, model_dir: Path, state: ModelState) -> bool:
        """Whether a refused version's files changed: one written in place (not staged and
        renamed) is refused while incomplete, and must be looked at again once complete."""
        for number in state.broken:
            seen = self._cache.broken.get((name, number))
            if seen is None or seen[0] != _fingerprint(model_dir / str(number)):
                return True
        return False

    def _scan_model_fully(self, name: str, model_dir: Path) -> tuple[ModelState, bool]:
        """(the model's state, whether its directory could be listed)."""
        try:
            on_disk = modelrepo.version_dirs(model_dir)
        except OSError as exc:
            # An unreadable model directory: keep serving what this worker has, boot with none.
            log.warning("cannot list model %s: %s; keeping what is loaded", name, exc,
                        extra={"model": name, "reason": str(exc)})
            return self._models.get(name) or ModelState(name, {}, {}, ()), False
        policy = self._policy(name, model_dir)
        named = policy.named_versions()
        loaded: dict[int, LoadedModel] = {}
        broken: dict[int, str] = {}
        for number in sorted(on_disk, reverse=True):
            # The newest keep_versions valid versions, and any older one the policy names.
            if len(loaded) >= self.keep_versions and number not in named:
                if not named or number < min(named):
                    break
                continue
            path = on_disk[number]
            key = (name, number)
            fp = _fingerprint(path)
            cached = self._cache.loaded.get(key)
            if cached and (cached[0] == fp or fp is None):
                # Unchanged — or unreadable just now: a loaded version stays, it was verified.
                loaded[number] = cached[1]
                continue
            seen = self._cache.broken.get(key)
            if seen and seen[0] == fp:
                broken[number] = seen[1]
                continue
            started = time.perf_counter()
            try:
                metadata, model_bytes = modelrepo.read_version(path)
                read = time.perf_counter() - started
                model = LoadedModel(name, number, metadata, model_bytes, path)
            except BrokenVersion as exc:
                log.error("refusing model %s version %s: %s", name, number, exc.reason,
                          extra={"model": name, "version": str(number), "reason": exc.reason})
                if self.telemetry is not None:
                    self.telemetry.model_loaded(name, number, ok=False)
                self._cache.broken[key] = (fp, exc.reason)
                broken[number] = exc.reason
                continue
            self._cache.loaded[key] = (fp, model)
            self._cache.broken.pop(key, None)
            loaded[number] = model
            # What the load cost, step by step (bench/switch.py reads it).
            log.info("loaded model %s version %s from %s in %.1f ms (read and verify %.1f, "
                     "session %.1f, warm-up %.1f)", name, number, path,
                     (time.perf_counter() - started) * 1e3, read * 1e3,
                     model.timings["session"] * 1e3, model.timings["warm-up"] * 1e3,
                     extra={"model": name, "version": str(number), "path": str(path)})
            if self.telemetry is not None:
                self.telemetry.model_loaded(name, number, ok=True)
        # Forget what is no longer on disk or no longer kept, so its session can be freed.
        for key in [k for k in self._cache.loaded if k[0] == name and k[1] not in loaded]:
            log.info("unloaded model %s version %s", *key)
            del self._cache.loaded[key]
        for key in [k for k in self._cache.broken if k[0] == name and k[1] not in on_disk]:
            del self._cache.broken[key]
        return self._apply_policy(name, policy, dict(sorted(loaded.items())), broken,
                                  tuple(sorted(on_disk))), True

    def _policy(self, name: str, model_dir: Path) -> Policy:
        """The model's traffic policy: re-read only when traffic.json's fingerprint changed; a
        malformed one is logged once and the last good one stays in force."""
        try:
            st = os.stat(model_dir / POLICY_FILE)
            fp: Fingerprint | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            fp = None
        except OSError as exc:  # unreadable just now: keep what is in force
            log.warning("cannot stat the traffic policy of model %s: %s", name, exc.strerror,
                        extra={"model": name})
            return self._cache.policies.get(name, (None, Policy()))[1]
        cached = self._cache.policies.get(name)
        if cached is not None and cached[0] == fp:
            return cached[1]
        if fp is None:
            policy = Policy()
        else:
            try:
                policy = read_policy(model_dir)
            except PolicyError as exc:
                kept = cached[1] if cached is not None else Policy()
                log.error("ignoring the traffic policy of model %s: %s; the last good policy "
                          "stays in force", name, exc, extra={"model": name, "reason": str(exc)})
                self._cache.policies[name] = (fp, kept)  # logged once: until the file changes
                return kept
        self._cache.policies[name] = (fp, policy)
        if cached is not None or not policy.empty:
            log.info("traffic policy of model %s: %s", name, policy.to_json(),
                     extra={"model": name})
        return policy

    def _apply_policy(self, name: str, policy: Policy, loaded: dict[int, LoadedModel],
                      broken: dict[int, str], on_disk: tuple[int, ...]) -> ModelState:
        """The model's state with its policy applied to what is loaded: each part naming a
        version that is not served (missing, retired, broken) is dropped, logged once."""
        if policy.empty:
            self._cache.policy_problems.pop(name, None)
            return ModelState(name, loaded, broken, on_disk)
        problems: dict[str, str] = {}

        def why(version: int) -> str:
            if version in broken:
                return f"version {version} is broken: {broken[version]}"
            if version in on_disk:
                return f"version {version} is not loaded"
            retired = (self.root / name / f"{modelrepo.RETIRED_PREFIX}{version}").is_dir()
            return f"version {version} is {'retired' if retired else 'missing'}"

        aliases: dict[str, LoadedModel] = {}
        for alias, version in policy.aliases.items():
            if version in loaded:
                aliases[alias] = loaded[version]
            else:
                problems[alias] = why(version)
        latest = loaded[max(loaded)] if loaded else None
        default, target = (aliases[PRODUCTION], "production") if PRODUCTION in aliases else \
            (latest, "latest")
        traffic = None
        if default is not None:
            parts: dict[str, Any] = {}
            for part, split in (("canary", policy.canary), ("shadow", policy.shadow)):
                if split is None:
                    continue
                if split.version not in loaded:
                    problems[part] = why(split.version)
                elif loaded[split.version] is default:
                    problems[part] = f"version {split.version} already serves as {target}"
                else:
                    parts[part] = loaded[split.version]
                    parts[f"{part}_share"] = split.percent / 100
            if policy.canary is not None and policy.canary.sticky_header:
                parts["sticky_environ"] = \
                    "HTTP_" + policy.canary.sticky_header.upper().replace("-", "_")
            traffic = Traffic(default, target, **parts)
        texts = {f"{part}: {reason}" for part, reason in problems.items()}
        for text in sorted(texts - self._cache.policy_problems.get(name, set())):
            log.warning("traffic policy of model %s, ignoring %s", name, text,
                        extra={"model": name, "reason": text})
        self._cache.policy_problems[name] = texts
        return ModelState(name, loaded, broken, on_disk, traffic, aliases,
                          {k: v for k, v in problems.items() if k in policy.aliases}, policy)

    # --- watching ---------------------------------------------------------------------------

    def watch(self, poll_seconds: float) -> None:
        """Rescan every ``poll_seconds`` in a daemon thread (one per worker process)."""
        if poll_seconds <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                try:
                    self.scan()
                except Exception:  # the watcher must outlive any surprise
                    log.exception("repository scan failed; will retry")

        self._watcher = threading.Thread(target=loop, name="softserve-watch", daemon=True)
        self._watcher.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watcher: no scan starts after this, and one in progress is waited for
        ``timeout`` seconds at most (the thread is a daemon: it cannot hold the process).
        Raises nothing."""
        self._stop.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)
