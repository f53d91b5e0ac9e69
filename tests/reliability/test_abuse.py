"""Resource abuse against a real gunicorn: nesting, tiny rows, slow and lying clients, crowds.

What bounds what (serving/gunicorn.conf.py and the SOFTSERVE_* defaults):

- ``SOFTSERVE_MAX_BODY_BYTES`` (16 MiB): a larger declared body is a 413 before it is read; it
  also bounds the memory a body can cost once parsed (measured here: tens of bytes per body
  byte at worst, for a body made of empty lists).
- orjson's nesting limit (1024 levels) and ``SOFTSERVE_MAX_BATCH_ROWS`` (100000): deep nesting
  and huge row counts are 400/413 answers, not crashes.
- softserve's worker (serving/worker.py, the default) reads every connection without blocking
  and runs the app only on whole requests: slow and stalled clients hold nothing but their own
  buffer. ``SOFTSERVE_REQUEST_TIMEOUT`` (10 s; 2 s in these tests) bounds how long a begun
  request may take to arrive (then 408) and how long a client may stall taking its answer;
  gunicorn's ``keepalive`` (5 s) closes idle connections; buffers of unfinished requests are
  capped at 4 x SOFTSERVE_MAX_BODY_BYTES per worker (then 503).
- gunicorn's ``timeout`` (30 s; 5 s in these tests) is all that bounds a stalled client with
  ``--worker-class sync``: the master kills the stuck worker, and as many stalled connections as
  workers stop everyone else until then.
- gunicorn's request-line (4094 bytes) and header limits answer 414/431/400 (JSON with
  softserve's worker, HTML with sync).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import (ROW, V2_ROW, WORKER_CLASSES, RawResponse,
                                        assert_json_error, call, http_request, log_problems,
                                        log_size, parse_response, raw_exchange, start,
                                        wait_for_workers, worker_pids)
from tests.support.net import wait_until
from tests.support.processes import proc_status
from tests.support.server import Server

MAX_BODY = 16 * 1024 * 1024  # SOFTSERVE_MAX_BODY_BYTES' default, used by these servers


@pytest.fixture(scope="module", params=list(WORKER_CLASSES))
def server(request: pytest.FixtureRequest, iris_repository: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(iris_repository, tmp_path_factory.mktemp("abuse"), worker_class=request.param)
    srv.worker_class = request.param  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def filled(prefix: bytes, item: bytes, suffix: bytes, size: int = MAX_BODY) -> bytes:
    """prefix + item,item,... + suffix: as many items as fit in ``size`` bytes."""
    n = (size - len(prefix) - len(suffix) + 1) // (len(item) + 1)
    body = prefix + b",".join([item] * n) + suffix
    assert len(body) <= size
    return body


def peak_rss_kb(server: Server) -> dict[int, int]:
    return {pid: proc_status(pid)["VmHWM"] for pid in worker_pids(server)}


# --- bodies that cost memory or time to parse ---------------------------------------------------


def test_deep_nesting_is_refused_without_cost(server: Server) -> None:
    workers = worker_pids(server)
    deep = 100_000
    bodies = {
        "/predict": [b'{"instances": ' + b"[" * deep + b"]" * deep + b"}",
                     b'{"instances": [' + b'{"a": ' * deep + b"1" + b"}" * deep + b"]}",
                     b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}"],
        "/v2/models/iris/infer": [
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": '
            + b"[" * deep + b"]" * deep + b"}]}",
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": '
            + b"[" * 1000 + b"1" + b"]" * 1000 + b"}]}",
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
            b'"data": [1, 2, 3, 4]}], "parameters": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000
            + b"}"],
    }
    before = peak_rss_kb(server)
    for path, items in bodies.items():
        for body in items:
            response = raw_exchange(server.port, http_request("POST", path, body))
            if response.status != 200:  # nesting inside "parameters" is allowed, up to orjson's
                assert response.status == 400, response
                assert_json_error(response.status, response.body, response.headers)
    after = peak_rss_kb(server)
    assert worker_pids(server) == workers
    # Refused while parsing: far less than the bodies' own size (~200 kB each) times ten.
    assert all(after[pid] - before[pid] < 64 * 1024 for pid in workers), (before, after)


@pytest.mark.parametrize("server", ["softserve"], indirect=True)  # the parsing is the same in sync
def test_huge_numbers_of_tiny_rows_stay_within_the_body_limit(server: Server) -> None:
    """The worst bodies per byte: millions of empty lists/objects, values past the row limit.

    Peak memory per worker is bounded by SOFTSERVE_MAX_BODY_BYTES times a constant measured
    here (printed; docs/reliability.md has the figures), and is given back afterwards.
    """
    v2 = b'{"inputs": [{"name": "input", "shape": [%d, 4], "datatype": "FP32", "data": ['
    cases = [
        ("/predict", filled(b'{"instances": [', b"[]", b"]}"), 413),
        ("/predict", filled(b'{"instances": [', b"{}", b"]}"), 413),
        ("/predict", b'{"instances": [' + b",".join([b"[0,0,0,0]"] * 100_001) + b"]}", 413),
        ("/predict", b'{"instances": [' + b",".join([b"[0,0,0,0]"] * 100_000) + b"]}", 200),
        ("/v2/models/iris/infer", filled(v2 % 100_000, b"0", b"]}]}"), 400),
        ("/v2/models/iris/infer", filled(v2 % 1, b"[]", b"]}]}"), 400),
        ("/predict", b"[" * 10 + b"0" * MAX_BODY, 413),  # over the limit: not even read
    ]
    workers = worker_pids(server)
    baseline = {pid: proc_status(pid) for pid in workers}
    worst = 0.0
    for path, body, expected in cases:
        before = peak_rss_kb(server)
        response = raw_exchange(server.port, http_request("POST", path, body), timeout=120)
        assert response.status == expected, (path, len(body), response.status, response.body[:200])
        if expected != 200:
            assert_json_error(response.status, response.body, response.headers)
        after = peak_rss_kb(server)
        grown = max(after[pid] - before[pid] for pid in workers) * 1024
        worst = max(worst, grown / min(len(body), MAX_BODY))
    rss_after = {pid: proc_status(pid)["VmRSS"] for pid in workers}
    print(f"\npeak growth per body byte: {worst:.1f} (x {MAX_BODY >> 20} MiB body limit = "
          f"{worst * MAX_BODY / 2**20:.0f} MiB per worker); RSS kB before "
          f"{ {p: s['VmRSS'] for p, s in baseline.items()} } after {rss_after}")
    assert worker_pids(server) == workers
    # Bounded: no more than 64 bytes of memory per byte of the largest body allowed ...
    assert worst < 64, worst
    # ... and given back: RSS ends within 128 MiB of where it started.
    assert all(rss_after[p] - baseline[p]["VmRSS"] < 128 * 1024 for p in workers), rss_after


# --- clients that lie or stall -------------------------------------------------------------------


def test_content_length_that_lies(server: Server) -> None:
    port = server.port
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    # Shorter than the body: the server reads what was declared, which is not the JSON.
    short = raw_exchange(port, head + b"Content-Length: 10\r\n\r\n" + ROW)
    assert short.status == 400
    assert_json_error(short.status, short.body, short.headers)
    # Larger than any allowed body: 413 without reading it.
    huge = raw_exchange(port, head + b"Content-Length: 99999999999\r\n\r\n" + ROW)
    assert huge.status == 413
    assert_json_error(huge.status, huge.body, huge.headers)
    # Not a number, negative, twice, or together with chunked: gunicorn refuses the request
    # itself (400, its own HTML page: the app never sees it).
    for lie in (b"Content-Length: abc\r\n", b"Content-Length: -5\r\n",
                b"Content-Length: 37\r\nContent-Length: 38\r\n",
                b"Content-Length: 37\r\nTransfer-Encoding: chunked\r\n"):
        answer = raw_exchange(port, head + lie + b"\r\n" + ROW)
        assert answer.status == 400, (lie, answer)
    # Longer than what is sent before the client closes its side: the request is incomplete
    # and must not be answered as if the bytes received were all of it.
    truncated = raw_exchange(port, head + b"Content-Length: 100\r\n\r\n" + ROW)
    assert truncated.status == 400, \
        f"a body cut short of its Content-Length was answered {truncated.status}: " \
        f"{truncated.body[:120]!r}"
    assert_json_error(truncated.status, truncated.body, truncated.headers)
    assert call(server.url + "/predict", ROW)[0] == 200


def test_malformed_chunked_bodies_are_client_errors(server: Server) -> None:
    """Chunked framing that is not HTTP: 400 like any other bad body, never 500."""
    port = server.port
    chunk = b"%x\r\n" % len(ROW) + ROW + b"\r\n"
    bad_framing = {
        "chunk size not hex": b"zz\r\n" + ROW,
        "chunk without its CRLF": chunk[:-2] + b"XX0\r\n\r\n",
        "control byte in a chunk extension": b"%x;a\x01b\r\n" % len(ROW) + ROW + b"\r\n0\r\n\r\n",
        "malformed trailer": chunk + b"0\r\nnot a header\r\n\r\n",
        "cut short": chunk[:20],
    }
    failures = {}
    for path in ("/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" \
               "Connection: close\r\n\r\n".encode()
        ok = raw_exchange(port, head + chunk + b"0\r\n\r\n")
        assert ok.status == (400 if "infer" in path else 200), ok  # framing fine: ROW isn't V2
        for name, body in bad_framing.items():
            answer = raw_exchange(port, head + body)
            if answer.status != 400:
                failures[f"{path}: {name}"] = (answer.status, answer.body[:80])
            else:
                assert_json_error(answer.status, answer.body, answer.headers)
    assert not failures, failures


def _slow_sender(port: int, stop: threading.Event, sent: list[int], body_size: int = 10_000) -> str:
    """Send headers, then one body byte every 0.2 s until told to stop; what the server did."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(http_request("POST", "/predict", b"").replace(
            b"Content-Length: 0", b"Content-Length: %d" % body_size))
        try:
            while not stop.wait(0.2) and sent[0] < body_size - 1:
                sock.sendall(b" ")
                sent[0] += 1
            return "held open"
        except OSError as exc:
            return f"closed by the server ({type(exc).__name__})"


def _served_meanwhile(server: Server, n: int = 20) -> list[float]:
    """``n`` requests on new connections: each one's latency; all must be 200."""
    latencies = []
    for _ in range(n):
        started = time.monotonic()
        status, body, _ = call(server.url + "/predict", ROW, timeout=60)
        latencies.append(time.monotonic() - started)
        assert status == 200, body
    return latencies


@pytest.mark.parametrize("server", ["sync"], indirect=True)
def test_sync_slow_clients_hold_one_worker_each(server: Server) -> None:
    """With --worker-class sync a slow body occupies a whole worker: as long as one worker is
    free, every other client is served while the slow ones are still sending."""
    stop = threading.Event()
    counters = [[0]]
    results: list[str] = []
    threads = [threading.Thread(
        target=lambda c=c: results.append(_slow_sender(server.port, stop, c)))
        for c in counters]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(c[0] >= 3 for c in counters), timeout=60)
        _served_meanwhile(server)
        assert not results, f"a slow client finished before the others were served: {results}"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert results == ["held open"], results


def test_slow_and_stalled_clients_hold_nothing(iris_repository: Path, tmp_path: Path) -> None:
    """softserve's worker: 40 clients trickling or stalling mid-request — 20 per worker, far
    more than the workers — do not slow anyone else down; each gets a JSON 408 once
    SOFTSERVE_REQUEST_TIMEOUT (2 s here) has passed since its first byte, and the connection
    closes. Nobody is killed: the workers are the same ones throughout."""
    server = start(iris_repository, tmp_path, env={"SOFTSERVE_REQUEST_TIMEOUT": "2"})
    try:
        workers = wait_for_workers(server, 2)
        answers: list[bytes] = []
        socks = []
        for i in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            # Half declare a body and send part of it (a lying Content-Length), half stop
            # inside the headers.
            request = http_request("POST", "/predict", ROW)
            sock.sendall(request.replace(b"Content-Length: %d" % len(ROW),
                                         b"Content-Length: %d" % (len(ROW) + 100))
                         if i % 2 else request[:30])
            socks.append(sock)
        started = time.monotonic()
        latencies = _served_meanwhile(server, 40)
        served_in = time.monotonic() - started
        for sock in socks:
            with sock:
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                answers.append(b"".join(chunks))
        cut_after = time.monotonic() - started
        print(f"\n40 requests served in {served_in:.2f} s (slowest {max(latencies) * 1000:.0f} ms) "
              f"beside 40 stalled clients, which were answered 408 and closed within "
              f"{cut_after:.1f} s")
        assert max(latencies) < 2, "someone waited behind the stalled clients"
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"Content-Type: application/json" in head
            assert "within 2 s" in json.loads(body)["error"]
        assert cut_after < 10
        assert worker_pids(server) == workers
        assert "WORKER TIMEOUT" not in server.log()
    finally:
        server.stop()


def test_a_trickled_request_within_the_timeout_is_served(iris_repository: Path,
                                                         tmp_path: Path) -> None:
    """Slow is allowed, stalled is not: a request trickled byte by byte over ~1 s is answered
    normally, and the others are served meanwhile."""
    server = start(iris_repository, tmp_path, workers=1, env={"SOFTSERVE_REQUEST_TIMEOUT": "5"})
    try:
        request = http_request("POST", "/predict", ROW)
        result: list[RawResponse] = []

        def trickle() -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                for i in range(len(request)):
                    sock.sendall(request[i:i + 1])
                    time.sleep(1 / len(request))
                result.append(parse_response(sock.recv(65536)))

        t = threading.Thread(target=trickle)
        t.start()
        _served_meanwhile(server, 10)
        t.join(30)
        assert result and result[0].status == 200, result
    finally:
        server.stop()


def test_a_client_that_does_not_read_its_answer_holds_nothing(iris_repository: Path,
                                                              tmp_path: Path) -> None:
    """Pipelined requests for big answers that the client never reads: the worker (only one
    here) keeps serving others, and closes that connection once it has stalled for
    SOFTSERVE_REQUEST_TIMEOUT."""
    server = start(iris_repository, tmp_path, workers=1, env={"SOFTSERVE_REQUEST_TIMEOUT": "2"})
    try:
        rows = [[5.1, 3.5, 1.4, 0.2]] * 50_000
        big = json.dumps({"instances": rows}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = http_request("POST", "/predict", big).replace(b"Connection: close\r\n", b"")
        sock.sendall(one * 4)  # about 8 MB of answers that nobody reads
        latencies = _served_meanwhile(server, 10)
        assert max(latencies) < 2, latencies

        def closed() -> None:
            assert "stalled taking its answer" in server.log()

        wait_until(closed, timeout=30)
        # The server gave up on it: reading now ends before four whole answers.
        received = 0
        sock.settimeout(10)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except OSError:
            pass
        sock.close()
        assert received < 4 * 2_000_000, received
        assert worker_pids(server) and "WORKER TIMEOUT" not in server.log()
    finally:
        server.stop()


def test_unfinished_requests_are_capped_per_worker(iris_repository: Path,
                                                   tmp_path: Path) -> None:
    """Memory held for bodies still arriving is capped at 4 x SOFTSERVE_MAX_BODY_BYTES per
    worker: past it, a request gets a JSON 503 and its connection closes."""
    limit = 100_000
    server = start(iris_repository, tmp_path, workers=1,
                   env={"SOFTSERVE_MAX_BODY_BYTES": str(limit)})
    try:
        head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % (limit - 1000))
        socks = []
        for _ in range(4):  # 4 x 90 kB buffered: within the cap
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(head + b" " * 90_000)
            socks.append(sock)
        time.sleep(0.5)
        over = raw_exchange(server.port, head + b" " * 90_000, half_close=False, timeout=10)
        assert over.status == 503, over
        assert_json_error(over.status, over.body, over.headers)
        assert call(server.url + "/predict", ROW)[0] == 200  # small requests still pass
        for sock in socks:
            sock.close()
    finally:
        server.stop()


def test_sync_stalled_clients_are_cut_by_the_worker_timeout(iris_repository: Path,
                                                            tmp_path: Path) -> None:
    """--worker-class sync: as many stalled connections as workers (one idle, one mid-body, i.e.
    a lying Content-Length) make everyone else wait until gunicorn's timeout kills those
    workers. The default timeout is 30 s; 5 s here. (softserve's worker: the test above.)"""
    server = start(iris_repository, tmp_path, worker_class="sync",
                   env={"GUNICORN_CMD_ARGS": "--timeout 5"})
    try:
        workers = wait_for_workers(server, 2)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=120)
        mid_body = socket.create_connection(("127.0.0.1", server.port), timeout=120)
        mid_body.sendall(http_request("POST", "/predict", ROW).replace(
            b"Content-Length: %d" % len(ROW), b"Content-Length: %d" % (len(ROW) + 100)))
        started = time.monotonic()
        status, body, _ = call(server.url + "/predict", ROW, timeout=120)
        waited = time.monotonic() - started
        assert status == 200, body
        for sock in (idle, mid_body):
            try:
                answer = sock.recv(100)
            except OSError as exc:
                answer = repr(exc).encode()
            assert not answer.startswith(b"HTTP/1.1 200"), answer
            sock.close()

        def timed_out() -> None:
            assert server.log().count("WORKER TIMEOUT") >= 2

        wait_until(timed_out, timeout=60)
        replaced = wait_for_workers(server, 2)
        assert set(replaced) != set(workers)
        print(f"\nsync: another client waited {waited:.1f} s behind 2 stalled connections "
              f"(--timeout 5); the stalled workers were replaced")
        for _ in range(10):
            assert call(server.url + "/predict", ROW)[0] == 200
    finally:
        server.stop()


# --- crowds -------------------------------------------------------------------------------------


def test_many_connections_at_once(server: Server) -> None:
    """A burst of 200 simultaneous clients: every one is answered, nothing is reset."""
    n = 200
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def client(i: int) -> None:
        barrier.wait(60)
        body = ROW if i % 2 else V2_ROW
        path = "/predict" if i % 2 else "/v2/models/iris/infer"
        try:
            outcomes[i] = raw_exchange(server.port, http_request("POST", path, body),
                                       timeout=120).status
        except OSError as exc:
            outcomes[i] = repr(exc)

    workers = worker_pids(server)
    log_start = log_size(server)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert outcomes == [200] * n, {repr(o) for o in outcomes if o != 200}
    assert worker_pids(server) == workers
    assert not log_problems(server, log_start), log_problems(server, log_start)[:5]
    assert json.loads(call(server.url + "/v2/health/ready")[1]) == {"ready": True}


def test_oversized_request_lines_and_headers_are_refused(server: Server) -> None:
    port = server.port
    long_url = raw_exchange(port, b"GET /v2/models/" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n")
    assert long_url.status == 414
    big_header = raw_exchange(port, b"GET /v2/health/live HTTP/1.1\r\nX-A: " + b"a" * 100_000
                              + b"\r\n\r\n")
    assert big_header.status == 431
    many = raw_exchange(port, b"GET /v2/health/live HTTP/1.1\r\n"
                        + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n")
    assert many.status == 431
    garbage = raw_exchange(port, b"\x00\x01\x02 garbage\r\n\r\n")
    assert garbage.status == 400
    assert call(server.url + "/v2/health/live")[0] == 200
