"""softserve's gunicorn worker: one event loop per process, keep-alive, whole requests only.

gunicorn's ``sync`` worker closes the connection after every response, and a client that trickles
its request holds the worker until the master kills it (``timeout``). ``gthread`` keeps
connections alive, but hands a connection to a thread at its first byte, where a slow client
holds the thread for as long as it keeps trickling, and its threads fight over the GIL.

``BufferingWorker`` reads every connection in one ``selectors`` loop, without blocking, until a
*whole* request is buffered (headers, then the body by ``Content-Length`` or chunked framing), and
only then runs the application, in the loop's own thread. So:

- a client can hold nothing but its own buffer: a request that is not complete
  ``SOFTSERVE_REQUEST_TIMEOUT`` seconds after its first byte gets a 408 and is closed, and every
  other client is served meanwhile;
- connections are kept alive (gunicorn's ``keepalive`` seconds idle; ``worker_connections`` at
  most per worker), and there are no threads to hand requests to or to contend for the GIL;
- answers are collected in memory (softserve's are built whole anyway) and written without
  blocking: a client that stops reading its answer holds only its own buffer, for at most
  ``SOFTSERVE_REQUEST_TIMEOUT`` without progress;
- bytes held for unfinished requests are capped per worker (4 x ``SOFTSERVE_MAX_BODY_BYTES``);
  past it a new request is answered 503;
- malformed HTTP is answered with a JSON error, like everything else;
- kept-alive connections are balanced over the workers (``SOFTSERVE_BALANCE_CONNECTIONS``, on by
  default): every worker shares one listening socket, and the kernel hands a new connection to
  whichever worker is first to ask, so 4 connections could land 4/0 and stay there. Each worker
  publishes how many connections it holds in memory shared by the master's workers
  (``_Board``); one that holds more than the fewest of any live worker + 1 (or + a quarter)
  stops accepting until that is no longer so, and the others take the next connections. A
  worker whose loop has not turned for ``HEARTBEAT_STALE`` seconds (busy with a long request,
  stopping, dead) is not waited for, and the worker with the fewest always accepts, so no
  connection waits for a worker that cannot take it. Then a worker takes up to
  ``ACCEPT_BATCH`` connections per event; with balancing off, one per event, as before;
- empty lines before a request (a stray CRLF, e.g. after a POST body) are ignored (RFC 9112
  2.2): they neither start the request timer nor keep an idle connection open longer;
- a connection closed after an answer (an error, ``Connection: close``) is not simply closed:
  closing a socket with unread bytes makes the kernel send RST, and a client still sending its
  body could lose the answer. The worker half-closes (FIN after the answer), then reads and drops
  what the client still sends, for ``LINGER_SECONDS`` and ``max(LINGER_BYTES, max body)`` at
  most, in the loop like any other read, until the client closes too (RFC 9112 9.6).

Where a request ends in the buffer (and the error answers for what cannot be framed) is
serving/http1.py's, pure functions; this module is the event loop around them. HTTP parsing, the
WSGI environ and the response framing are gunicorn's own (``RequestParser``, ``wsgi.create``,
``Response``), fed from the buffer. Not supported: TLS (terminate it in a proxy) and HTTP/2.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gunicorn import http
from gunicorn.http import wsgi
from gunicorn.http.errors import (
    ExpectationFailed,
    LimitRequestHeaders,
    LimitRequestLine,
    NoMoreData,
    UnsupportedTransferCoding,
)
from gunicorn.workers import base

import modelrepo

from .config import Config, ConfigError
from .http1 import CONTINUE, FramingError, empty_lines, error_response, frame
from .telemetry.access_log import access_log_buffer

RECV_BYTES = 256 * 1024
STOP_LINGER = 2.0  # a stopping worker keeps idle connections this long for requests in flight
SWEEP_SECONDS = 0.25  # how often deadlines are checked
# After an answer that closes the connection, what the client still sends is read and dropped
# for this long at most, and this many bytes at most (or the largest body allowed, if more).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
# Balancing connections over the workers (see the module docstring and _Board).
# A worker accepts while it holds at most this many more than the fewest, or a quarter more:
# a worker's loop takes its connections' requests in turn, so the slack is how many it may take
# per turn, and a fixed one would make 1,000 new connections wait for hundreds of turns.
BALANCE_SLACK = 1
BALANCE_SHIFT = 2
BOARD_SLOTS = 256  # workers (alive at once, stopping ones included) the board can balance
HEARTBEAT_STALE = 0.5  # a worker whose loop has not turned for this long is not waited for
HELD_BACK_SECONDS = 0.05  # how soon a worker that leaves connections to others looks again
ACCEPT_BATCH = 64  # connections taken per listener event at most (balancing on)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def _nothing() -> None:
    pass


class _Output:
    """The socket that gunicorn's ``Response`` writes to: it collects the bytes instead."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def send(self, data: bytes) -> int:
        # Only ``wsgi.create`` calls this, for "100 Continue": the loop sent it already, when the
        # headers arrived without the body.
        return len(data)


class _Conn:
    __slots__ = ("sock", "addr", "server", "buf", "deadline", "started", "out", "close_after",
                 "continued", "progress", "linger")

    def __init__(self, sock: socket.socket, addr: Any, server: Any) -> None:
        self.sock = sock
        self.addr = addr
        self.server = server
        self.buf = bytearray()
        self.deadline = 0.0
        self.started = False  # bytes of the next request have arrived
        self.out: memoryview | None = None  # answer bytes not yet sent
        self.close_after = False
        self.continued = False  # "100 Continue" sent for the request being read
        self.progress = [0, 0]  # where the scan of a chunked body being read stopped
        self.linger: int | None = None  # answered and half-closed: bytes still to drop


class _Board:
    """How many connections each worker of one master holds, in memory every worker shares.

    Made in the master before its first fork (gunicorn builds each worker object there, then
    forks), so every worker maps the same anonymous shared pages. Cell 0 is the number of slots
    ever assigned; slot ``i`` is the three cells from ``3 * (i + 1)``: pid, connections held,
    heartbeat (milliseconds of the machine's monotonic clock; 0: gone). Plain 8-byte stores
    and loads, no lock: a reader may see a figure one event old, which makes the balance
    approximate, never stuck (the worker with the fewest connections always accepts).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.cells = memoryview(mmap.mmap(-1, (slots + 1) * 3 * 8)).cast("q")
        self.owners: dict[int, Any] = {}  # in the master: slot -> the worker object given it

    def assign(self, worker: Any) -> int:
        """A free slot for a worker about to be forked (in the master): one never given, or
        whose worker has exited. -1 if there is none (that worker is not balanced)."""
        for slot in range(self.slots):
            owner = self.owners.get(slot)
            if owner is None or not _alive(owner.pid):
                self.owners[slot] = worker
                self.cells[0] = max(self.cells[0], slot + 1)
                return slot
        return -1


def _alive(pid: Any) -> bool:
    """Whether a worker's process still exists ("[booting]": not forked yet, so yes)."""
    return not isinstance(pid, int) or modelrepo.pid_alive(pid)


def _parse_error_status(exc: Exception) -> int:
    """The status for a request gunicorn's parser refused with ``exc``. Raises nothing."""
    if isinstance(exc, LimitRequestLine):
        return 414
    if isinstance(exc, LimitRequestHeaders):
        return 431
    if isinstance(exc, UnsupportedTransferCoding):
        return 501
    if isinstance(exc, ExpectationFailed):
        return 417
    return 400


class BufferingWorker(base.Worker):  # type: ignore[misc]  # gunicorn ships no types
    """See the module docstring."""

    alive: bool  # gunicorn's Worker: False once the worker is to stop
    board: _Board | None = None  # made by the first worker object built in the master

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # In the master, before the fork: the board made here is the one every worker shares.
        if BufferingWorker.board is None:
            BufferingWorker.board = _Board(BOARD_SLOTS)
        self.slot = BufferingWorker.board.assign(self)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if cfg.is_ssl:
            raise RuntimeError("softserve's worker does not terminate TLS: put a proxy in front")

    def init_process(self) -> None:
        try:
            settings = Config.load()
        except ConfigError as exc:
            self.log.error("%s", exc)
            sys.exit(1)
        self.request_timeout = settings.request_timeout
        self.max_body = settings.max_body_bytes
        self.buffer_budget = 4 * settings.max_body_bytes
        self.buffered = 0  # bytes held in buffers of unfinished requests, summed over connections
        self.linger_bytes = max(LINGER_BYTES, settings.max_body_bytes)
        self.scratch = bytearray(RECV_BYTES)  # where a lingering connection's bytes are dropped
        self.conns: dict[int, _Conn] = {}
        self.selector = selectors.DefaultSelector()
        self.accepting = False
        # Where this worker's figures are on the board; 0: not balanced.
        self.row = 0
        board = BufferingWorker.board
        if settings.balance_connections and board is not None and getattr(self, "slot", -1) >= 0:
            self.cells = board.cells
            self.row = 3 * (self.slot + 1)
            self.cells[self.row] = os.getpid()
            self.cells[self.row + 1] = 0
            self.cells[self.row + 2] = int(time.monotonic() * 1000)
        super().init_process()

    # ------------------------------------------------------------------------------ the loop

    def run(self) -> None:
        self.selector.register(self.PIPE[0], _READ, None)
        self._set_accepting(True)
        self.flush_log = self._access_log_flusher()
        next_sweep = next_notify = 0.0
        while self.alive:
            now = time.monotonic()
            if self.row:
                self.cells[self.row + 2] = int(now * 1000)
            if now >= next_notify:
                self.notify()
                next_notify = now + 1.0
                if not self.is_parent_alive():
                    break
            fair = self._fair()
            self._set_accepting(fair and len(self.conns) < self.cfg.worker_connections)
            self.flush_log()
            self._dispatch(self.selector.select(SWEEP_SECONDS if fair else HELD_BACK_SECONDS))
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_SECONDS
        self._stop()

    def _access_log_flusher(self) -> Callable[[], None]:
        """What writes the access-log lines the application held back: softserve's app can hold
        them until the loop is about to wait (``serving.telemetry.access_log.AccessLogBuffer``);
        for another app, nothing. Raises what the app's hook raises."""
        buffer = access_log_buffer(self.wsgi)
        return buffer.buffer_access_log() if buffer is not None else _nothing

    def _stop(self) -> None:
        """Graceful: finish what is being read or written; answer everything with
        "Connection: close". For STOP_LINGER seconds at most (until 50 ms pass without an event,
        on a quiet server), idle connections stay open for a request already on its way and new
        connections are still taken. Then the worker takes what is left in the listen backlog
        and closes its listener at once: connections still queued when the last process closes
        it would be reset by the kernel, while later ones are refused cleanly."""
        if self.row:  # a stopping worker is not waited for: the others take what comes
            self.cells[self.row + 2] = 0
        now = time.monotonic()
        linger_until = now + STOP_LINGER
        give_up = now + self.cfg.graceful_timeout
        for conn in self.conns.values():
            if not conn.started and conn.out is None:
                conn.deadline = min(conn.deadline, linger_until)
        listening, quiet = True, False
        while (now := time.monotonic()) < give_up:
            self.notify()
            if listening and (quiet or now >= linger_until):
                self._close_listeners()
                listening = False
            if not listening and not self.conns:
                break
            if listening:
                self._set_accepting(len(self.conns) < self.cfg.worker_connections)
            self.flush_log()
            events = self.selector.select(SWEEP_SECONDS if self.conns else 0.05)
            quiet = not events and not self.conns
            self._dispatch(events)
            self._sweep(time.monotonic())
        for conn in list(self.conns.values()):
            self._close(conn)
        self.selector.close()
        self.flush_log()

    def _close_listeners(self) -> None:
        self._set_accepting(False)
        for listener in self.sockets:
            listener.setblocking(False)
            while self._accept(listener):
                pass
            listener.close()

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        for listener in self.sockets:
            if on:
                listener.setblocking(False)
                self.selector.register(listener, _READ, listener)
            else:
                self.selector.unregister(listener)
        self.accepting = on

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, mask in events:
            data = key.data
            if data is None:  # the signal pipe
                try:
                    os.read(self.PIPE[0], 512)
                except BlockingIOError:
                    pass
            elif isinstance(data, _Conn):
                if mask & _WRITE:
                    self._write(data)
                else:
                    self._read(data)
            elif self.accepting:
                if not self.row:
                    self._accept(data)
                    continue
                for _ in range(ACCEPT_BATCH):
                    if not (self._accept(data) and self._fair()
                            and len(self.conns) < self.cfg.worker_connections):
                        break

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if conn.linger is not None:
                self._close(conn)
            elif conn.out is not None:
                self.log.info("closing connection from %s: stalled taking its answer for %g s",
                              conn.addr, self.request_timeout)
                self._close(conn)
            elif conn.started:
                self._answer_and_close(conn, 408, f"request not received in full within "
                                                  f"{self.request_timeout:g} s")
            else:
                self._close(conn)

    # ----------------------------------------------------------------------- connections

    def _fair(self) -> bool:
        """Whether this worker may take the next connection: if it is not balanced, holds at
        most BALANCE_SLACK connections, or at most BALANCE_SLACK (or a quarter of what it
        holds) more than every other live worker on the board. Raises nothing."""
        held = len(self.conns)
        if held <= BALANCE_SLACK or not self.row:
            return True
        cells = self.cells
        fresh = int(time.monotonic() * 1000) - int(HEARTBEAT_STALE * 1000)
        # Another live worker holding fewer than this: leave it the next connection.
        fewest = held - max(BALANCE_SLACK, held >> BALANCE_SHIFT)
        for row in range(3, 3 * cells[0] + 3, 3):
            if cells[row + 1] < fewest and cells[row + 2] > fresh and row != self.row:
                return False
        return True

    def _accept(self, listener: socket.socket) -> bool:
        """Take one connection, if there is one. Without balancing, one per event: a worker
        busy with a request is not in select(), so the others take the next connections."""
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return False
            raise
        sock.setblocking(False)
        conn = _Conn(sock, addr, listener.getsockname())
        conn.deadline = time.monotonic() + self._idle_seconds()
        self.conns[sock.fileno()] = conn
        self.selector.register(sock, _READ, conn)
        if self.row:
            self.cells[self.row + 1] = len(self.conns)
        return True

    def _idle_seconds(self) -> float:
        return self.cfg.keepalive if self.alive and self.cfg.keepalive else min(
            STOP_LINGER, self.request_timeout)

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.sock.fileno(), None) is None:
            return
        if self.row:
            self.cells[self.row + 1] = len(self.conns)
        self.buffered -= len(conn.buf)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _read(self, conn: _Conn) -> None:
        if conn.linger is not None:
            self._drain(conn)
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client is done sending; it may still be reading
            if conn.started and conn.out is None:
                self._answer_and_close(conn, 400, "the connection ended inside a request")
            else:
                self._close(conn)
            return
        if self.buffered + len(data) > self.buffer_budget and len(conn.buf) + len(data) > 65536:
            self._answer_and_close(conn, 503, "the server is holding too many unfinished "
                                              "requests; retry later")
            return
        conn.buf += data
        self.buffered += len(data)
        if not conn.started:
            self._skip_empty_lines(conn)
            if not conn.started:  # empty lines only: still idle, under the idle deadline
                return
            conn.deadline = time.monotonic() + self.request_timeout
        self._serve_buffered(conn)

    def _skip_empty_lines(self, conn: _Conn) -> None:
        """Drop the empty lines that precede the next request in ``conn.buf``; it has started
        once anything else (but a CR that may begin a CRLF) is there."""
        skip = empty_lines(conn.buf)
        if skip:
            del conn.buf[:skip]
            self.buffered -= skip
        # Started once a byte other than CR is there (CRs may still begin an empty line); the
        # strip, a copy, only runs for a buffer that begins with a CR.
        conn.started = bool(conn.buf) and (conn.buf[0] != 13 or bool(conn.buf.lstrip(b"\r")))

    def _linger(self, conn: _Conn) -> None:
        """Close ``conn`` once its last answer is written, without losing that answer to an
        RST: half-close, then drop what the client still sends (``_drain``) until it closes,
        for LINGER_SECONDS and ``linger_bytes`` at most (``_sweep``)."""
        self.buffered -= len(conn.buf)
        conn.buf.clear()
        conn.started = False
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.linger = self.linger_bytes
        conn.deadline = time.monotonic() + LINGER_SECONDS

    def _drain(self, conn: _Conn) -> None:
        """Read and drop what a lingering connection's client sent; close at its end or past
        the byte budget."""
        try:
            got = conn.sock.recv_into(self.scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        assert conn.linger is not None
        conn.linger -= got
        if not got or conn.linger < 0:
            self._close(conn)

    def _serve_buffered(self, conn: _Conn) -> None:
        """Answer the request(s) complete in ``conn.buf``, until an answer cannot be written at
        once or the next request is incomplete."""
        while conn.buf and conn.out is None:
            try:
                found = frame(conn.buf, self.max_body, conn.progress)
            except FramingError as exc:
                self._answer_and_close(conn, exc.status, exc.message)
                return
            if found is None:
                return
            end, body_missing, body_start = found
            if end < 0:  # the headers are in, the body is not, and the client waits for 100
                if not conn.continued:
                    conn.continued = True
                    self._send_now(conn, CONTINUE)
                return
            # The head goes to gunicorn's parser; a Content-Length body straight to wsgi.input
            # (one copy, and BytesIO.read() of all of it returns the same bytes object).
            chunked = body_start < 0
            with memoryview(conn.buf) as view:
                if chunked or body_start == end:
                    raw, body = bytes(view[:end]), None
                else:
                    raw, body = bytes(view[:body_start]), bytes(view[body_start:end])
            del conn.buf[:end]
            conn.progress[0] = conn.progress[1] = 0
            self.buffered -= end
            if body_missing:
                conn.close_after = True
                self.buffered -= len(conn.buf)
                conn.buf.clear()
            conn.continued = False
            answer = self._handle(conn, raw, body, chunked)
            self._skip_empty_lines(conn)
            if not self._send(conn, answer):
                return

    def _after_answer(self, conn: _Conn) -> bool:
        """An answer is out: close (lingering), or wait for the next request. False if
        closing."""
        if conn.close_after:
            self._linger(conn)
            return False
        conn.deadline = time.monotonic() + (self.request_timeout if conn.started
                                            else self._idle_seconds())
        return True

    def _send_now(self, conn: _Conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _answer_and_close(self, conn: _Conn, status: int, message: str) -> None:
        self.log.info("closing connection from %s: %d %s", conn.addr, status, message)
        conn.close_after = True
        self.buffered -= len(conn.buf)
        conn.buf.clear()
        self._send(conn, error_response(status, message))

    def _send(self, conn: _Conn, answer: bytes) -> bool:
        """Write ``answer``; what the socket does not take now waits for it to be writable.
        True if all of it went and the connection stays open for the next request."""
        try:
            sent = conn.sock.send(answer) if answer else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return False
        if sent < len(answer):
            conn.out = memoryview(answer)[sent:]
            conn.deadline = time.monotonic() + self.request_timeout
            self.selector.modify(conn.sock, _WRITE, conn)
            return False
        return self._after_answer(conn)

    def _write(self, conn: _Conn) -> None:
        out = conn.out
        assert out is not None
        try:
            sent = conn.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if sent < len(out):
            conn.out = out[sent:]
            conn.deadline = time.monotonic() + self.request_timeout
            return
        conn.out = None
        self.selector.modify(conn.sock, _READ, conn)
        if self._after_answer(conn):
            self._serve_buffered(conn)

    # ----------------------------------------------------------------------- one request

    def _handle(self, conn: _Conn, raw: bytes, body: bytes | None, chunked: bool) -> bytes:
        """Run the application on one complete request (``raw``, or its head and ``body``); the
        whole answer, as bytes."""
        req = resp = None
        environ: dict[str, Any] = {}
        try:
            parser = http.get_parser(self.cfg, iter((raw,)), conn.addr)
            req = next(parser)
            self.cfg.pre_request(self, req)
            started = datetime.now() if self.cfg.accesslog else None
            output = _Output()
            resp, environ = wsgi.create(req, output, conn.addr, conn.server, self.cfg)
            if body is not None:
                environ["wsgi.input"] = io.BytesIO(body)
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if conn.close_after or not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                if hasattr(respiter, "close"):
                    respiter.close()
            if started is not None:
                self.log.access(resp, req, environ, datetime.now() - started)
            if resp.should_close() or (chunked and (resp.status_code or 0) >= 400):
                # A chunked body refused by gunicorn's reader: where the next request would
                # start is not certain, so there is none.
                conn.close_after = True
            return b"".join(output.chunks)
        except (StopIteration, NoMoreData):
            conn.close_after = True
            status, message = 400, "incomplete request"
        except Exception as exc:
            conn.close_after = True
            if req is None:  # gunicorn's parser refused the request
                status, message = _parse_error_status(exc), str(exc) or type(exc).__name__
            elif resp is not None and resp.headers_sent:
                self.log.exception("Error handling request")
                return b""
            else:
                self.log.exception("Error handling request")
                status, message = 500, "internal error"
        finally:
            if req is not None:
                try:
                    self.cfg.post_request(self, req, environ, resp)
                except Exception:
                    self.log.exception("Exception in post_request hook")
        return error_response(status, message)
