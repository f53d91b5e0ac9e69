"""softserve's gunicorn worker (serving/worker.py, ``serving.worker.BufferingWorker``).

``request_end`` — where the first request in a buffer ends — is a pure function, tested directly.
Everything else runs against a real gunicorn on 127.0.0.1 with the worker as its default worker
class: keep-alive, pipelining, ``Expect: 100-continue``, chunked and trickled bodies, malformed
HTTP answered as JSON, HTTP/1.0, and the idle and request timeouts (a 1-worker server of its own
with ``--keep-alive 1`` and ``SOFTSERVE_REQUEST_TIMEOUT=1``). Raw sockets, so that exactly the
bytes under test go on the wire, and http.client where a real client is the point.

These tests found four bugs in the worker's first version, now fixed: chunk sizes framed more
loosely than gunicorn's reader (``0x5``, ``+5``, no CRLF after the data: a request-smuggling
risk), ``Transfer-Encoding: gzip, chunked`` handed over before its body, "100 Continue" sent
to HTTP/1.0 clients, and a chunked body re-scanned from its start on every read.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from serving.worker import CONTINUE, HEADER_LIMIT, BadFraming, request_end
from tests.support.server import Server, start_server
from tests.reliability.conftest import (ROW, V2_ROW, RawResponse, assert_json_error,
                                        http_request, parse_response, raw_exchange)

MAX = 1000  # max_body for the request_end cases
LIVE = b'{"live":true}'
NEXT = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"  # a pipelined request after the first
TE = b"Transfer-Encoding: chunked"
EXPECT = b"Expect: 100-continue"


# --------------------------------------------------------------------------------- helpers


def message(*headers: bytes, body: bytes = b"", target: bytes = b"/predict") -> bytes:
    """A POST request as bytes: its header lines, then the blank line, then ``body`` as is."""
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"\r\n" + body)


def chunks(*parts: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    """``parts`` in chunked framing, then the last chunk (and trailers) ``last``."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + last


def end_of(buf: bytes, max_body: int = MAX) -> tuple[int, bool] | None:
    return request_end(bytearray(buf), max_body)


def refusal(buf: bytes, max_body: int = MAX) -> int:
    """The status of the BadFraming that request_end raises for ``buf``."""
    with pytest.raises(BadFraming) as caught:
        request_end(bytearray(buf), max_body)
    assert str(caught.value), "a BadFraming without a message"
    return caught.value.status


def split_responses(data: bytes) -> list[RawResponse]:
    """Consecutive HTTP responses (interim ones included) in ``data``, each framed by its
    Content-Length."""
    answers = []
    while data:
        answer = parse_response(data)
        assert answer.status is not None, data[:300]
        head_length = data.index(b"\r\n\r\n") + 4
        if answer.status < 200:  # interim: a head alone
            answer = parse_response(data[:head_length])
        answers.append(answer)
        data = data[head_length + len(answer.body):]
    return answers


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds
    every wait)."""
    received = []
    while chunk := sock.recv(65536):
        received.append(chunk)
    return b"".join(received)


def recv_head(sock: socket.socket) -> bytes:
    """Bytes until the end of one response head (the blank line), no further."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def exchange(port: int, pieces: Iterable[bytes], pause: float = 0.0,
             timeout: float = 30) -> list[RawResponse]:
    """Send ``pieces`` one ``send`` each (Nagle off: small pieces go as segments of their own),
    ``pause`` seconds apart, on one new connection; the responses until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, piece in enumerate(pieces):
            if pause and i:
                time.sleep(pause)
            sock.sendall(piece)
        return split_responses(read_until_closed(sock))


def assert_prediction(answer: RawResponse) -> None:
    """A 200 of /predict for ROW (an iris setosa)."""
    assert answer.status == 200, answer
    assert answer.json()["predictions"][0]["label"] == "setosa", answer.body


def assert_v2_outputs(answer: RawResponse) -> None:
    """A 200 of /v2/models/iris/infer for V2_ROW."""
    assert answer.status == 200, answer
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["class"]["data"] == [0] and outputs["probabilities"]["shape"] == [1, 3], outputs


# --------------------------------------------------------------------- request_end, unit cases


WHOLE = {
    "no body": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
    "content-length": message(b"Content-Length: 5", body=b"hello"),
    "content-length 0": message(b"Content-Length: 0"),
    "content-length, any case and spacing": message(b"CONTENT-length:   5  ", body=b"hello"),
    "content-length of max_body": message(b"Content-Length: %d" % MAX, body=b"a" * MAX),
    "chunked": message(TE, body=chunks(b"hello", b" world")),
    "chunked, no data": message(TE, body=chunks()),
    "chunked, data holding CRLFs": message(TE, body=chunks(b"\r\n\r\n", b"0\r\n\r\n")),
    "chunked with extensions": message(TE, body=b"5;name=value\r\nhello\r\n"
                                                b"6 ; a=b;c\r\n world\r\n0;last=1\r\n\r\n"),
    "chunked with trailers": message(TE, body=chunks(b"hello", last=b"0\r\nX-Sum: 1\r\n"
                                                                     b"X-Other: 2\r\n\r\n")),
    "chunked, upper-case hex sizes": message(TE, body=b"A\r\n0123456789\r\n0\r\n\r\n"),
    "content-length, expect, body sent anyway": message(b"Content-Length: 5", EXPECT,
                                                        body=b"hello"),
    "chunked, expect, body sent anyway": message(TE, EXPECT, body=chunks(b"hello")),
}


@pytest.mark.parametrize("raw", WHOLE.values(), ids=WHOLE.keys())
def test_request_end_finds_where_a_whole_request_ends(raw: bytes) -> None:
    assert end_of(raw) == (len(raw), False)
    # Pipelined: the next request's bytes are not the first's.
    assert end_of(raw + NEXT) == (len(raw), False)
    assert end_of(raw + NEXT[:7]) == (len(raw), False)
    # Any prefix is incomplete (or, for a client that expects 100-continue, waits for it).
    waiting = (None, (-1, False)) if EXPECT.lower() in raw.lower() else (None,)
    incomplete = {cut: end_of(raw[:cut]) for cut in range(len(raw))}
    assert {cut: found for cut, found in incomplete.items() if found not in waiting} == {}


def test_request_end_waits_for_a_body_announced_with_expect_100_continue() -> None:
    head = message(b"Content-Length: 5", EXPECT)
    assert end_of(head) == (-1, False)
    assert end_of(head + b"hel") == (-1, False)
    assert end_of(head + b"hello") == (len(head) + 5, False)
    assert end_of(message(b"Content-Length: 5", b"EXPECT:  100-Continue")) == (-1, False)
    assert end_of(message(TE, EXPECT)) == (-1, False)
    assert end_of(message(TE, EXPECT, body=b"5\r\nhel")) == (-1, False)
    # Nothing is owed before the headers are whole, and a body of 0 bytes is all there.
    assert end_of(head[:-2]) is None
    empty = message(b"Content-Length: 0", EXPECT)
    assert end_of(empty) == (len(empty), False)
    # Without the expectation, an incomplete body is just incomplete.
    assert end_of(message(b"Content-Length: 5")) is None
    assert end_of(message(b"Content-Length: 5", b"Expect: something-else")) is None


def test_request_end_hands_over_a_body_over_max_body_with_its_headers_only() -> None:
    head = message(b"Content-Length: %d" % (MAX + 1))
    assert end_of(head) == (len(head), True)
    assert end_of(head + b"a" * 100) == (len(head), True)
    assert end_of(head + b"a" * (MAX + 1)) == (len(head), True)
    # No "100 Continue" for a body that will be refused anyway.
    expecting = message(b"Content-Length: 99999999999", EXPECT)
    assert end_of(expecting) == (len(expecting), True)


def test_request_end_leaves_unsupported_transfer_codings_to_gunicorn() -> None:
    raw = message(b"Transfer-Encoding: foo", body=b"abc")
    assert end_of(raw) == (len(raw), True)


FRAMING = {
    "content-length and transfer-encoding": (message(b"Content-Length: 5", TE,
                                                     body=chunks(b"hello")), 400),
    "transfer-encoding and content-length": (message(TE, b"Content-Length: 5",
                                                     body=chunks(b"hello")), 400),
    "content-length twice": (message(b"Content-Length: 5", b"Content-Length: 5",
                                     body=b"hello"), 400),
    "content-length twice, other case": (message(b"Content-Length: 5", b"content-LENGTH: 6",
                                                 body=b"hello!"), 400),
    "content-length not a number": (message(b"Content-Length: abc", body=b"abc"), 400),
    "content-length negative": (message(b"Content-Length: -5", body=b"hello"), 400),
    "content-length with a sign": (message(b"Content-Length: +5", body=b"hello"), 400),
    "content-length as a list": (message(b"Content-Length: 5, 5", body=b"hello"), 400),
    "content-length empty": (message(b"Content-Length:", body=b"hello"), 400),
    "content-length in hex": (message(b"Content-Length: 0x5", body=b"hello"), 400),
    "chunk size not hex": (message(TE, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size empty": (message(TE, body=b"\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size negative": (message(TE, body=b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size line without end": (message(TE, body=b"1" * 2000), 400),
    "headers without end over the limit": (b"GET / HTTP/1.1\r\nX-A: " + b"a" * HEADER_LIMIT, 431),
    "headers over the limit": (b"GET / HTTP/1.1\r\nX-A: " + b"a" * HEADER_LIMIT + b"\r\n\r\n",
                               431),
    "trailers over the limit": (message(TE, body=b"0\r\nX-A: " + b"a" * (HEADER_LIMIT + 10)),
                                431),
    "chunked body over max_body": (message(TE, body=chunks(b"a" * 600, b"a" * 600)), 413),
    "chunked body announced over max_body": (message(TE, body=b"%x\r\n" % (MAX + 1)), 413),
    "chunked body over max_body, in small chunks": (
        message(TE, body=b"".join(chunks(b"a" * 100)[:-5] for _ in range(11))), 413),
}


@pytest.mark.parametrize(("raw", "status"), FRAMING.values(), ids=FRAMING.keys())
def test_request_end_refuses_what_cannot_be_framed(raw: bytes, status: int) -> None:
    assert refusal(raw) == status


def test_request_end_takes_headers_up_to_the_limit() -> None:
    head = b"GET / HTTP/1.1\r\nX-A: "
    fits = head + b"a" * (HEADER_LIMIT - len(head)) + b"\r\n\r\n"
    assert fits.index(b"\r\n\r\n") == HEADER_LIMIT
    assert end_of(fits) == (len(fits), False)
    assert end_of(fits[:-4]) is None


# Chunk sizes that gunicorn's own chunked reader refuses (only hex digits, BWS only before ";"),
# and a chunk whose data is not followed by CRLF.
LENIENT_CHUNKS = {
    "0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "plus sign": b"+5\r\nhello\r\n0\r\n\r\n",
    "underscore": b"0_5\r\nhello\r\n0\r\n\r\n",
    "leading space": b" 5\r\nhello\r\n0\r\n\r\n",
    "trailing space": b"5 \r\nhello\r\n0\r\n\r\n",
    "data not followed by CRLF": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("body", LENIENT_CHUNKS.values(), ids=LENIENT_CHUNKS.keys())
def test_request_end_frames_chunks_as_strictly_as_gunicorn(body: bytes) -> None:
    assert refusal(message(TE, body=body)) == 400


@pytest.mark.parametrize("coding", [b"identity, chunked", b"gzip, chunked"])
def test_request_end_waits_for_a_body_chunked_after_other_codings(coding: bytes) -> None:
    head = message(b"Transfer-Encoding: " + coding)
    try:
        found = end_of(head)
    except BadFraming:  # refusing such codings outright would do too
        found = None
    assert found is None


# --------------------------------------------------------------------------- the session server


def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    kinds = [("GET", "/v2/health/live", None, lambda doc: doc == {"live": True}),
             ("POST", "/predict", ROW, lambda doc: doc["predictions"][0]["label"] == "setosa"),
             ("POST", "/v2/models/iris/infer", V2_ROW,
              lambda doc: [o["data"] for o in doc["outputs"] if o["name"] == "class"] == [[0]])]
    try:
        conn.connect()
        sock = conn.sock
        local = sock.getsockname()
        for i in range(50):
            method, path, body, check = kinds[i % len(kinds)]
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            assert response.status == 200, (i, path, data)
            assert check(json.loads(data)), (i, path, data)
            assert (response.getheader("Connection") or "").lower() != "close", (i, path)
            assert conn.sock is sock and conn.sock.getsockname() == local, \
                f"request {i} ({path}) went on a new connection"
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    live = http_request("GET", "/v2/health/live").replace(b"Connection: close\r\n", b"")
    predict = http_request("POST", "/predict", ROW).replace(b"Connection: close\r\n", b"")
    infer = http_request("POST", "/v2/models/iris/infer", V2_ROW)
    answers = exchange(server.port, [live + predict + infer])
    assert [a.status for a in answers] == [200, 200, 200], answers
    assert answers[0].body == LIVE
    assert_prediction(answers[1])
    assert_v2_outputs(answers[2])
    assert [a.headers["connection"].lower() for a in answers] == ["keep-alive", "keep-alive",
                                                                  "close"]
    # The next request cut in two sends, the first send along with the whole first request.
    cut = len(predict) - len(ROW) // 2
    answers = exchange(server.port, [live + predict[:cut], predict[cut:] + infer], pause=0.1)
    assert [a.status for a in answers] == [200, 200, 200], answers
    assert answers[0].body == LIVE
    assert_prediction(answers[1])
    assert_v2_outputs(answers[2])


def test_a_request_after_connection_close_is_not_answered(server: Server) -> None:
    closing = http_request("GET", "/v2/health/live")
    answers = exchange(server.port, [closing + NEXT])
    assert [(a.status, a.body) for a in answers] == [(200, LIVE)], answers


def test_expect_100_continue_gets_one_interim_answer_before_the_body(server: Server) -> None:
    request = http_request("POST", "/predict", ROW, {"Expect": "100-continue"})
    head, body = request[: -len(ROW)], ROW
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        assert recv_head(sock) == CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answers = split_responses(read_until_closed(sock))
    assert len(answers) == 1, [a.status for a in answers]  # no second 100, from gunicorn's wsgi
    assert_prediction(answers[0])


def test_expect_100_continue_with_the_body_already_sent_gets_no_interim_answer(
        server: Server) -> None:
    request = http_request("POST", "/predict", ROW, {"Expect": "100-continue"})
    answers = exchange(server.port, [request])
    assert [a.status for a in answers] == [200], answers
    assert_prediction(answers[0])


def test_expect_100_continue_with_chunked_body(server: Server) -> None:
    head = message(TE, EXPECT, b"Connection: close")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        assert recv_head(sock) == CONTINUE
        sock.sendall(chunks(ROW[:10], ROW[10:]))
        answers = split_responses(read_until_closed(sock))
    assert len(answers) == 1, [a.status for a in answers]
    assert_prediction(answers[0])


def test_expect_100_continue_with_a_body_over_the_limit_is_refused_at_once(
        server: Server) -> None:
    head = message(b"Content-Length: 99999999999", EXPECT)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        answers = split_responses(read_until_closed(sock))
    assert [a.status for a in answers] == [413], answers
    assert_json_error(413, answers[0].body, answers[0].headers)


def test_no_100_continue_for_http_1_0(server: Server) -> None:
    request = http_request("POST", "/predict", ROW, {"Expect": "100-continue"}).replace(
        b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    head, body = request[: -len(ROW)], ROW
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(2)  # the worker answers at once when it sends one
        try:
            early = sock.recv(65536)
        except TimeoutError:
            early = b""
        sock.settimeout(30)
        sock.sendall(body)
        answers = split_responses(early + read_until_closed(sock))
    assert [a.status for a in answers] == [200], [a.status for a in answers]


def test_chunked_body_with_extensions_and_trailers_is_served(server: Server) -> None:
    body = b"7;part=1\r\n" + ROW[:7] + b"\r\n" + chunks(ROW[7:], last=b"0;end\r\nX-Sum: 1\r\n\r\n")
    raw = message(TE, b"Connection: close", body=body)
    answers = exchange(server.port, [raw])
    assert len(answers) == 1
    assert_prediction(answers[0])


def test_chunked_body_over_several_sends_with_pauses_is_served(server: Server) -> None:
    body = chunks(ROW[:5], ROW[5:20], ROW[20:], last=b"0\r\nX-Sum: 1\r\n\r\n")
    head = message(TE, b"Connection: close", target=b"/v1/models/iris:predict")
    pieces = [head[:20], head[20:], *(body[i:i + 9] for i in range(0, len(body), 9))]
    answers = exchange(server.port, pieces, pause=0.02)
    assert len(answers) == 1
    assert_prediction(answers[0])


def test_a_request_one_byte_per_send_is_served(server: Server) -> None:
    raw = http_request("POST", "/predict", ROW)
    answers = exchange(server.port, [raw[i:i + 1] for i in range(len(raw))])
    assert len(answers) == 1
    assert_prediction(answers[0])
    chunked = message(TE, b"Connection: close", body=chunks(ROW[:9], ROW[9:], last=b"0\r\n"
                                                                                b"X-A: b\r\n\r\n"))
    answers = exchange(server.port, [chunked[i:i + 1] for i in range(len(chunked))])
    assert len(answers) == 1
    assert_prediction(answers[0])


MALFORMED = {
    "garbage request line": (b"\x00\x01\x02 garbage\r\n\r\n", 400),
    "request line without version": (b"GET /v2/health/live\r\nHost: x\r\n\r\n", 400),
    "request line too long": (b"GET /v2/models/" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", 414),
    "too many headers": (b"GET /v2/health/live HTTP/1.1\r\n"
                         + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n", 431),
    "header over gunicorn's field limit": (b"GET /v2/health/live HTTP/1.1\r\nX-A: "
                                           + b"a" * 20_000 + b"\r\n\r\n", 431),
    "headers over the worker's limit": (b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70)) + b"\r\n", 431),
    "unsupported transfer-encoding": (message(b"Transfer-Encoding: foo", body=b"abc"), 501),
    "content-length and transfer-encoding": (message(b"Content-Length: 5", TE,
                                                     body=chunks(b"hello")), 400),
    "content-length twice": (message(b"Content-Length: 1", b"Content-Length: 2", body=b"ab"),
                             400),
    "content-length not a number": (message(b"Content-Length: five", body=b"hello"), 400),
    "chunk size not hex": (message(TE, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    "chunked HTTP/1.0": (message(TE, body=chunks(b"hello")).replace(b"HTTP/1.1", b"HTTP/1.0"),
                         400),
}


@pytest.mark.parametrize(("raw", "status"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_a_json_error_and_the_connection_closes(
        server: Server, raw: bytes, status: int) -> None:
    # No half-close: the server must end the connection by itself.
    answer = raw_exchange(server.port, raw + NEXT, timeout=10, half_close=False)
    assert answer.status == status, answer
    assert answer.error is None, answer.error
    assert_json_error(answer.status, answer.body, answer.headers)
    assert answer.headers.get("connection", "").lower() == "close", answer.headers


def test_http_1_0_without_keep_alive_is_closed_after_its_answer(server: Server) -> None:
    answers = exchange(server.port, [b"GET /v2/health/live HTTP/1.0\r\n\r\n"])
    assert [(a.status, a.body) for a in answers] == [(200, LIVE)], answers
    # Keep-alive asked for: two answers on one connection, the second closing it.
    keep = b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    answers = exchange(server.port, [keep, b"GET /v2/health/live HTTP/1.0\r\n\r\n"], pause=0.05)
    assert [(a.status, a.body) for a in answers] == [(200, LIVE), (200, LIVE)], answers
    assert answers[0].headers["connection"].lower() == "keep-alive"


@pytest.mark.parametrize("body", [LENIENT_CHUNKS["0x prefix"],
                                  LENIENT_CHUNKS["data not followed by CRLF"]],
                         ids=["0x prefix", "data not followed by CRLF"])
def test_nothing_is_served_after_a_chunked_body_gunicorn_refuses(server: Server,
                                                                 body: bytes) -> None:
    answers = exchange(server.port, [message(TE, body=body) + http_request(
        "GET", "/v2/health/live")])
    assert [a.status for a in answers] == [400], [(a.status, a.body) for a in answers]


# -------------------------------------------------------- timeouts: a server with short ones


@pytest.fixture(scope="module")
def short_timeouts(iris_repository: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, idle connections closed after 1 s, requests given 1 s to arrive whole."""
    srv = start_server(iris_repository, tmp_path_factory.mktemp("worker"), workers=1,
                       env={"GUNICORN_CMD_ARGS": "--keep-alive 1",
                            "SOFTSERVE_REQUEST_TIMEOUT": "1"})
    yield srv
    assert srv.stop() == 0, srv.log()


def test_idle_kept_alive_connection_is_closed_after_keep_alive(short_timeouts: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", short_timeouts.port, timeout=5)
    try:
        for _ in range(2):  # kept alive between requests sent at once
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, LIVE)
            assert response.getheader("Connection") == "keep-alive"
        sock = conn.sock
        assert sock is not None
        idle_since = time.monotonic()
        # Closed quietly (no 408 nor any other byte), well within the socket's 5 s timeout.
        assert sock.recv(1024) == b""
        assert time.monotonic() - idle_since > 0.5, "closed without waiting for keep-alive"
    finally:
        conn.close()


def test_a_request_not_whole_within_the_request_timeout_gets_408(short_timeouts: Server) -> None:
    started = http_request("POST", "/predict", ROW)[:-5]  # 5 body bytes short
    answer = raw_exchange(short_timeouts.port, started, timeout=10, half_close=False)
    assert answer.status == 408, answer
    assert answer.error is None, answer.error
    assert_json_error(answer.status, answer.body, answer.headers)
    # Meanwhile and after, the (only) worker serves others.
    answers = exchange(short_timeouts.port, [http_request("POST", "/predict", ROW)])
    assert len(answers) == 1
    assert_prediction(answers[0])
