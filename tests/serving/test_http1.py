"""HTTP/1.1 framing (serving/http1.py): pure functions on bytes, tested without sockets.

``frame`` — where the first request in a buffer ends, where its body starts, or that it cannot
be framed — ``empty_lines`` — the empty lines before a request, ignored — and
``error_response`` — the answer to what cannot be framed. Besides whole requests and refusals:
every prefix of a request (incomplete, or waiting for "100 Continue"), the scan of a chunked body
resumed from where the previous call stopped (as the worker does on every read) against a fresh
scan, pipelined requests taken out of one buffer as the worker takes them, and every limit at its
boundary. The same framing against a real server: tests/serving/test_worker.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from http import HTTPStatus

import pytest

from serving.http1 import (AWAIT_CONTINUE, CHUNK_LINE_LIMIT, HEADER_LIMIT, FramingError,
                           empty_lines, error_response, frame)
from tests.support import ROOT

MAX = 1000  # max_body for the frame cases
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
    """``frame`` without where the body starts: ``(end, body_missing)`` or None."""
    found = frame(bytearray(buf), max_body)
    return None if found is None else found[:2]


def refusal(buf: bytes, max_body: int = MAX) -> int:
    """The status of the FramingError that frame raises for ``buf``."""
    with pytest.raises(FramingError) as caught:
        frame(bytearray(buf), max_body)
    assert caught.value.message and str(caught.value) == caught.value.message, caught.value
    return caught.value.status


def outcome(buf: bytes | bytearray, progress: list[int] | None,
            max_body: int = MAX) -> tuple[int, bool, int] | int | None:
    """What ``frame`` returns for ``buf``, or the status of the FramingError it raises."""
    try:
        return frame(bytearray(buf), max_body, progress)
    except FramingError as exc:
        return exc.status


def assert_resumes_like_fresh(raw: bytes, max_body: int = MAX) -> None:
    """Growing ``raw`` a byte at a time, with the chunk scan resumed from one call to the next
    (``progress``), gives at every length what a fresh scan gives."""
    progress = [0, 0]
    for cut in range(len(raw) + 1):
        resumed = outcome(raw[:cut], progress, max_body)
        assert resumed == outcome(raw[:cut], None, max_body), (cut, raw[:cut][-40:])
        if isinstance(resumed, int):  # refused: the connection closes, nothing more is read
            return


def take_requests(data: bytes | bytearray, buf: bytearray | None = None,
                  progress: list[int] | None = None) -> list[bytes]:
    """The requests ``data`` completes, taken out of ``buf`` (which it is added to) as the worker
    takes them: the empty lines before each dropped, the chunk scan reset after each."""
    buf = bytearray() if buf is None else buf
    progress = [0, 0] if progress is None else progress
    buf += data
    taken = []
    while True:
        del buf[:empty_lines(buf)]
        found = frame(buf, MAX, progress)
        if found is None or found == AWAIT_CONTINUE:
            return taken
        taken.append(bytes(buf[:found[0]]))
        del buf[:found[0]]
        progress[0] = progress[1] = 0


def imported_alone(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``module`` of the ``serving``
    package without running serving/__init__.py (which wires the Flask app)."""
    code = ("import json, sys, types\n"
            "package = types.ModuleType('serving')\n"
            "package.__path__ = [sys.argv[1]]\n"
            "sys.modules['serving'] = package\n"
            f"import {module}\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "serving")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -------------------------------------------------------------------------- whole requests


WHOLE = {
    "no body": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
    "content-length": message(b"Content-Length: 5", body=b"hello"),
    "content-length 0": message(b"Content-Length: 0"),
    "content-length, any case and spacing": message(b"CONTENT-length:   5  ", body=b"hello"),
    "content-length of max_body": message(b"Content-Length: %d" % MAX, body=b"a" * MAX),
    "content-length with leading zeros": message(b"Content-Length: 005", body=b"hello"),
    "chunked": message(TE, body=chunks(b"hello", b" world")),
    "chunked, any case": message(b"transfer-encoding: CHUNKED", body=chunks(b"hello")),
    "chunked, no data": message(TE, body=chunks()),
    "chunked, data holding CRLFs": message(TE, body=chunks(b"\r\n\r\n", b"0\r\n\r\n")),
    "chunked, data of max_body in all": message(TE, body=chunks(b"a" * 600, b"a" * (MAX - 600))),
    "chunked, many small chunks": message(TE, body=chunks(*(b"ab" for _ in range(40)))),
    "chunked with extensions": message(TE, body=b"5;name=value\r\nhello\r\n"
                                                b"6 ; a=b;c\r\n world\r\n0;last=1\r\n\r\n"),
    "chunked with trailers": message(TE, body=chunks(b"hello", last=b"0\r\nX-Sum: 1\r\n"
                                                                     b"X-Other: 2\r\n\r\n")),
    "chunked, upper-case hex sizes": message(TE, body=b"A\r\n0123456789\r\n0\r\n\r\n"),
    "chunked, sizes with leading zeros": message(TE, body=b"0005\r\nhello\r\n000\r\n\r\n"),
    "chunked after other codings": message(b"Transfer-Encoding: gzip, chunked",
                                           body=chunks(b"hello")),
    "content-length, expect, body sent anyway": message(b"Content-Length: 5", EXPECT,
                                                        body=b"hello"),
    "chunked, expect, body sent anyway": message(TE, EXPECT, body=chunks(b"hello")),
    "HTTP/1.0, the request line alone": b"GET /v2/health/live HTTP/1.0\r\n\r\n",
}


def body_start_of(raw: bytes) -> int:
    """Where ``frame`` should say the body of ``raw`` starts: -1 if chunked."""
    chunked = b"transfer-encoding:" in raw.lower()
    return -1 if chunked else raw.index(b"\r\n\r\n") + 4


@pytest.mark.parametrize("raw", WHOLE.values(), ids=WHOLE.keys())
def test_frame_finds_where_a_whole_request_ends(raw: bytes) -> None:
    assert frame(bytearray(raw), MAX) == (len(raw), False, body_start_of(raw))
    assert end_of(raw) == (len(raw), False)
    # Pipelined: the next request's bytes are not the first's.
    assert end_of(raw + NEXT) == (len(raw), False)
    assert end_of(raw + NEXT[:7]) == (len(raw), False)
    # Any prefix is incomplete (or, for a client that expects 100-continue, waits for it).
    waiting = (None, (-1, False)) if EXPECT.lower() in raw.lower() else (None,)
    incomplete = {cut: end_of(raw[:cut]) for cut in range(len(raw))}
    assert {cut: found for cut, found in incomplete.items() if found not in waiting} == {}


@pytest.mark.parametrize("raw", WHOLE.values(), ids=WHOLE.keys())
def test_a_chunk_scan_resumed_on_every_byte_finds_what_a_fresh_scan_finds(raw: bytes) -> None:
    assert_resumes_like_fresh(raw + NEXT)


def test_frame_waits_for_a_body_announced_with_expect_100_continue() -> None:
    head = message(b"Content-Length: 5", EXPECT)
    assert AWAIT_CONTINUE == (-1, False, -1)
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


def test_frame_owes_no_100_continue_to_http_1_0_nor_once_the_chunked_data_is_in() -> None:
    for head in (message(b"Content-Length: 5", EXPECT), message(TE, EXPECT)):
        assert end_of(head) == (-1, False)
        assert end_of(head.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)) is None
    # The last chunk is in, its trailers are not: the client sent its body already.
    assert end_of(message(TE, EXPECT, body=chunks(b"hello", last=b"0\r\nX-Sum: 1\r\n"))) is None


def test_frame_hands_over_a_body_over_max_body_with_its_headers_only() -> None:
    head = message(b"Content-Length: %d" % (MAX + 1))
    assert frame(bytearray(head), MAX) == (len(head), True, len(head))
    assert end_of(head + b"a" * 100) == (len(head), True)
    assert end_of(head + b"a" * (MAX + 1)) == (len(head), True)
    # No "100 Continue" for a body that will be refused anyway.
    expecting = message(b"Content-Length: 99999999999", EXPECT)
    assert end_of(expecting) == (len(expecting), True)


@pytest.mark.parametrize("coding", [b"foo", b"chunked, gzip", b"chunkedx", b""])
def test_frame_leaves_unsupported_transfer_codings_to_gunicorn(coding: bytes) -> None:
    """All of the buffer goes to gunicorn's parser, which refuses the request (400 or 501)."""
    raw = message(b"Transfer-Encoding: " + coding, body=b"abc")
    assert frame(bytearray(raw), MAX) == (len(raw), True, -1)


# --------------------------------------------------------------------------------- refusals


FRAMING = {
    "content-length and transfer-encoding": (message(b"Content-Length: 5", TE,
                                                     body=chunks(b"hello")), 400),
    "transfer-encoding and content-length": (message(TE, b"Content-Length: 5",
                                                     body=chunks(b"hello")), 400),
    "content-length twice": (message(b"Content-Length: 5", b"Content-Length: 5",
                                     body=b"hello"), 400),
    "content-length twice, other case": (message(b"Content-Length: 5", b"content-LENGTH: 6",
                                                 body=b"hello!"), 400),
    "transfer-encoding twice": (message(TE, TE, body=chunks(b"hello")), 400),
    "expect twice": (message(b"Content-Length: 5", EXPECT, EXPECT), 400),
    "content-length not a number": (message(b"Content-Length: abc", body=b"abc"), 400),
    "content-length negative": (message(b"Content-Length: -5", body=b"hello"), 400),
    "content-length with a sign": (message(b"Content-Length: +5", body=b"hello"), 400),
    "content-length as a list": (message(b"Content-Length: 5, 5", body=b"hello"), 400),
    "content-length empty": (message(b"Content-Length:", body=b"hello"), 400),
    "content-length in hex": (message(b"Content-Length: 0x5", body=b"hello"), 400),
    "content-length in non-ASCII digits": (message("Content-Length: ٥".encode(),
                                                   body=b"hello"), 400),
    "chunk size not hex": (message(TE, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size empty": (message(TE, body=b"\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size negative": (message(TE, body=b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size empty before extensions": (message(TE, body=b";a=b\r\nhello\r\n0\r\n\r\n"),
                                           400),
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
def test_frame_refuses_what_cannot_be_framed(raw: bytes, status: int) -> None:
    assert refusal(raw) == status


# Those a byte at a time costs little for (not the header limit's).
SHORT_FRAMING = {name: raw for name, (raw, _) in FRAMING.items() if len(raw) < 4096}


@pytest.mark.parametrize("raw", SHORT_FRAMING.values(), ids=SHORT_FRAMING.keys())
def test_a_chunk_scan_resumed_on_every_byte_refuses_where_a_fresh_scan_does(raw: bytes) -> None:
    assert_resumes_like_fresh(raw)
    assert isinstance(outcome(raw, [0, 0]), int)


# Chunk sizes that gunicorn's own chunked reader refuses (only hex digits, BWS only before ";"),
# and a chunk whose data is not followed by CRLF.
LENIENT_CHUNKS = {
    "0x prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "plus sign": b"+5\r\nhello\r\n0\r\n\r\n",
    "underscore": b"0_5\r\nhello\r\n0\r\n\r\n",
    "leading space": b" 5\r\nhello\r\n0\r\n\r\n",
    "trailing space": b"5 \r\nhello\r\n0\r\n\r\n",
    "data not followed by CRLF": b"5\r\nhelloXX0\r\n\r\n",
    "data followed by a bare LF": b"5\r\nhello\n0\r\n\r\n",
    "data longer than its size": b"5\r\nhello!\r\n0\r\n\r\n",
    "a second chunk's data not followed by CRLF": b"1\r\na\r\n5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("body", LENIENT_CHUNKS.values(), ids=LENIENT_CHUNKS.keys())
def test_frame_frames_chunks_as_strictly_as_gunicorn(body: bytes) -> None:
    assert refusal(message(TE, body=body)) == 400


@pytest.mark.parametrize("coding", [b"identity, chunked", b"gzip, chunked"])
def test_frame_waits_for_a_body_chunked_after_other_codings(coding: bytes) -> None:
    head = message(b"Transfer-Encoding: " + coding)
    try:
        found = end_of(head)
    except FramingError:  # refusing such codings outright would do too
        found = None
    assert found is None


# ----------------------------------------------------------------------- limits at the edge


def test_frame_takes_headers_up_to_the_limit() -> None:
    head = b"GET / HTTP/1.1\r\nX-A: "
    fits = head + b"a" * (HEADER_LIMIT - len(head)) + b"\r\n\r\n"
    assert fits.index(b"\r\n\r\n") == HEADER_LIMIT
    assert end_of(fits) == (len(fits), False)
    assert end_of(fits[:-4]) is None
    # Unfinished headers: waited for up to the limit, refused one byte past it.
    unfinished = head + b"a" * (HEADER_LIMIT - len(head))
    assert end_of(unfinished) is None
    assert refusal(unfinished + b"a") == 431


def test_frame_takes_a_chunk_size_line_up_to_its_limit() -> None:
    head = message(TE)
    line = b"0" * CHUNK_LINE_LIMIT
    assert end_of(head + line) is None
    assert end_of(head + line + b"\r\n\r\n") == (len(head) + len(line) + 4, False)
    assert refusal(head + line + b"0") == 400
    # Extensions count in the line.
    extended = b"5;" + b"a" * (CHUNK_LINE_LIMIT - 2)
    assert end_of(head + extended) is None
    assert refusal(head + extended + b"a") == 400


def test_frame_takes_chunked_trailers_up_to_the_limit() -> None:
    head = message(TE)
    trailer = b"X-A: " + b"a" * (HEADER_LIMIT - 10)
    unfinished = head + b"0\r\n" + trailer
    assert end_of(unfinished) is None
    whole = unfinished + b"\r\n\r\n"
    assert end_of(whole) == (len(whole), False)
    assert refusal(head + b"0\r\n" + b"X-A: " + b"a" * HEADER_LIMIT) == 431


def test_frame_counts_every_chunk_against_max_body() -> None:
    fits = message(TE, body=chunks(*(b"a" * 100 for _ in range(MAX // 100))))
    assert end_of(fits) == (len(fits), False)
    over = message(TE, body=chunks(*(b"a" * 100 for _ in range(MAX // 100)), b"a"))
    assert refusal(over) == 413
    # Refused as soon as the size line of the chunk that goes over is in, before its data.
    announced = over[:over.rindex(b"1\r\na\r\n") + 3]
    assert refusal(announced) == 413
    assert end_of(announced[:-2]) is None


# ------------------------------------------------------------------- pipelined requests


PIPELINE = [
    WHOLE["no body"],
    WHOLE["content-length"],
    WHOLE["chunked with trailers"],
    WHOLE["chunked with extensions"],
    WHOLE["content-length 0"],
    WHOLE["chunked, data holding CRLFs"],
    WHOLE["HTTP/1.0, the request line alone"],
]


def test_pipelined_requests_are_taken_one_by_one_in_order() -> None:
    assert take_requests(b"".join(PIPELINE)) == PIPELINE
    # With empty lines between them (an extra CRLF after a body, RFC 9112 2.2).
    assert take_requests(b"\r\n".join(PIPELINE) + b"\r\n") == PIPELINE
    assert take_requests(b"\n\r\n".join(PIPELINE)) == PIPELINE


def test_pipelined_requests_cut_anywhere_are_taken_whole() -> None:
    data = b"\r\n".join(PIPELINE)
    for cut in range(len(data) + 1):
        buf, progress = bytearray(), [0, 0]
        first = take_requests(data[:cut], buf, progress)
        assert first + take_requests(data[cut:], buf, progress) == PIPELINE, cut
        assert buf == b"", cut


def test_pipelined_requests_sent_a_byte_at_a_time_are_taken_whole() -> None:
    data = b"\r\n".join(PIPELINE)
    buf, progress, taken = bytearray(), [0, 0], []
    for i in range(len(data)):
        taken += take_requests(data[i:i + 1], buf, progress)
    assert taken == PIPELINE and buf == b""


# ----------------------------------------------------------------------------- empty lines


EMPTY_LINES = {
    b"": 0,
    b"GET / HTTP/1.1": 0,
    b"\r\n": 2,
    b"\n": 1,
    b"\r\n\r\nGET / HTTP/1.1": 4,
    b"\n\nGET / HTTP/1.1": 2,
    b"\r\n\nGET / HTTP/1.1": 3,
    b"\r\r\nGET / HTTP/1.1": 3,  # a bare LF with CRs before it (RFC 9112 2.2)
    b"\r": 0,  # the start of a CRLF, maybe: not yet
    b"\r\n\r": 2,
    b"\rGET / HTTP/1.1": 0,  # a CR alone is no empty line: the request is malformed
    b" \r\nGET / HTTP/1.1": 0,
    b"\r\n \r\n": 2,
}


@pytest.mark.parametrize(("buf", "blank"), EMPTY_LINES.items(), ids=map(repr, EMPTY_LINES))
def test_empty_lines_counts_the_empty_lines_before_a_request(buf: bytes, blank: int) -> None:
    assert empty_lines(buf) == empty_lines(bytearray(buf)) == blank


def test_empty_lines_takes_a_flood_at_once() -> None:
    assert empty_lines(b"\r\n" * 100_000 + b"GET") == 200_000


# --------------------------------------------------------------------------- error answers


@pytest.mark.parametrize("status", [400, 408, 413, 414, 417, 431, 500, 501, 503])
def test_error_response_is_a_closing_json_answer_with_the_standard_phrase(status: int) -> None:
    text = 'a "quoted" reason, é, \\ and\nnewline'
    head, _, body = error_response(status, text).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    assert status_line == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert headers == {"Content-Type": "application/json", "Content-Length": str(len(body)),
                       "Connection": "close"}
    assert json.loads(body) == {"error": text}


def test_error_response_names_a_status_http_does_not_know_an_error() -> None:
    assert error_response(599, "odd").startswith(b"HTTP/1.1 599 Error\r\n")


# ------------------------------------------------------------------------------ the module


def test_http1_needs_no_sockets_event_loop_gunicorn_nor_flask() -> None:
    modules = set(imported_alone("serving.http1"))
    assert "serving.http1" in modules
    assert modules & {"socket", "selectors", "gunicorn", "flask", "werkzeug"} == set()
    assert "serving.errors" in modules  # the one error renderer, itself framework-free
