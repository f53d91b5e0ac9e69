"""Test instrumentation for processes the reliability tests start (never imported otherwise).

A process started with ``PYTHONPATH=tests/reliability/hooks`` imports this module at start-up
(Python's ``site`` imports ``sitecustomize``). It does nothing unless one of these is set:

``SOFTSERVE_TEST_AUDIT_LOG`` + ``SOFTSERVE_TEST_AUDIT_ROOT``
    A ``sys.addaudithook`` hook appends one JSON line per interesting event to the log: every
    file opened, listed, created, renamed, removed or chmod-ed under the root (the model
    repository), every ``pickle.find_class`` (something being unpickled) and every process
    spawned. gunicorn workers inherit the hook through fork. With
    ``SOFTSERVE_TEST_AUDIT_MARKER`` also any file access anywhere whose path holds that text.
``SOFTSERVE_TEST_STOP_AT=N:TEXT`` (with ``SOFTSERVE_TEST_AUDIT_ROOT``)
    The process stops itself (SIGSTOP) just before the N-th change it makes under the root
    whose description contains TEXT, so that a test can SIGKILL it at exactly that point.
``SOFTSERVE_TEST_ACCEPT_LOG``
    Every ``socket.accept()`` appends ``<pid> <peer port>`` to this file: which client
    connections a gunicorn worker took from the listen backlog.

Audit hooks see the operations before they happen and cannot be removed; they cost a dict
lookup per event. Only the standard library is used, and nothing here opens files with
``open()`` (the hook would see itself).
"""

from __future__ import annotations

import json
import os
import signal
import sys

# Audit events that change the filesystem; their first argument is the path.
_MUTATIONS = frozenset({
    "os.mkdir", "os.rmdir", "os.remove", "os.rename", "os.chmod", "os.chown", "os.utime",
    "os.symlink", "os.link", "os.truncate", "shutil.rmtree", "shutil.move", "shutil.copyfile",
    "shutil.copymode", "shutil.copystat", "shutil.chown", "tempfile.mkdtemp", "tempfile.mkstemp",
})
_READS = frozenset({"os.listdir", "os.scandir"})
_SPAWNS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _path(value: object) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        path = os.fsdecode(os.fspath(value))
        return os.path.abspath(path)
    return None


def _install_audit(log_path: str | None, root: str, stop_at: str | None) -> None:
    root = os.path.realpath(root)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666) if log_path else None
    stop_count, _, stop_text = (stop_at or "").partition(":")
    marker = os.environ.get("SOFTSERVE_TEST_AUDIT_MARKER")
    state = {"seen": 0, "busy": False}

    def record(kind: str, event: str, **fields: object) -> None:
        if fd is not None:
            line = json.dumps({"pid": os.getpid(), "kind": kind, "event": event, **fields})
            os.write(fd, line.encode() + b"\n")

    def under_root(path: str | None) -> bool:
        return path is not None and (path == root or path.startswith(root + os.sep))

    def hook(event: str, args: tuple) -> None:
        if state["busy"]:
            return
        if marker and (event == "open" or event in _MUTATIONS or event in _READS) and \
                any(marker in p for p in map(_path, args[:2]) if p is not None):
            state["busy"] = True
            try:
                record("marker", event, path=_path(args[0]), description=repr(args)[:300])
            finally:
                state["busy"] = False
        if event == "open":
            path = _path(args[0])
            if not under_root(path):
                return
            mode, flags = args[1], args[2] or 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (mode is None and bool(flags & _WRITE_FLAGS))
            kind = "mutation" if writes else "read"
            description = f"open {path} {mode if mode is not None else flags}"
        elif event in _MUTATIONS:
            paths = [p for p in map(_path, args) if p is not None]
            if not any(under_root(p) for p in paths):
                return
            kind, path = "mutation", paths[0]
            description = f"{event} {' -> '.join(paths)}"
        elif event in _READS:
            path = _path(args[0]) if args else None
            if not under_root(path):
                return
            kind, description = "read", f"{event} {path}"
        elif event == "pickle.find_class":
            kind, path, description = "unpickle", None, f"{args[0]}.{args[1]}"
        elif event in _SPAWNS:
            kind, path, description = "spawn", None, repr(args[:2])[:300]
        else:
            return
        state["busy"] = True
        try:
            record(kind, event, path=path, description=description)
            if kind == "mutation" and stop_count and stop_text in description:
                state["seen"] += 1
                if state["seen"] == int(stop_count):
                    record("stopped", event, path=path, description=description)
                    os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


def _install_accept_log(log_path: str) -> None:
    import socket

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    accept = socket.socket.accept

    def logged_accept(self: socket.socket):  # type: ignore[no-untyped-def]
        conn, address = accept(self)
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else -1
        os.write(fd, f"{os.getpid()} {port}\n".encode())
        return conn, address

    socket.socket.accept = logged_accept  # type: ignore[method-assign]


_root = os.environ.get("SOFTSERVE_TEST_AUDIT_ROOT")
if _root:
    _install_audit(os.environ.get("SOFTSERVE_TEST_AUDIT_LOG"), _root,
                   os.environ.get("SOFTSERVE_TEST_STOP_AT"))
if os.environ.get("SOFTSERVE_TEST_ACCEPT_LOG"):
    _install_accept_log(os.environ["SOFTSERVE_TEST_ACCEPT_LOG"])
