"""Talking to a server on 127.0.0.1: a free port, one request, polling until a check holds."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)


def send(port: int, method: str, path: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 60) -> Reply:
    """One request to 127.0.0.1 on a fresh connection; http.client adds no Content-Type.

    Raises OSError or http.client.HTTPException if no HTTP answer comes back.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     response.read())
    finally:
        conn.close()


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """``check()``'s value once it stops raising AssertionError; its last error after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
