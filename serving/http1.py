"""HTTP/1.1 framing for softserve's worker: pure functions on the bytes a connection received.

No sockets, no event loop, no application, no gunicorn: serving/worker.py reads into a buffer and
asks this module

- ``empty_lines``: how many bytes before the next request are empty lines, to be ignored
  (RFC 9112 2.2);
- ``frame``: whether the first request in the buffer is whole (its headers, then its body by
  ``Content-Length`` or chunked framing), where it ends and where its body starts; or that more
  bytes are needed; or that the client waits for "100 Continue"; or ``FramingError`` when where it
  ends cannot be found. The framing is as strict as gunicorn's parser and chunked reader, which
  then read the request framed here: where this says a request ends is where gunicorn says so too,
  so that no bytes are read as a request by one and as a body by the other (request smuggling);
- ``error_response``: the whole answer to a request refused here (or by the worker): a status
  line with the phrase of ``http.HTTPStatus``, ``Connection: close`` and softserve's JSON error
  body ``{"error": "..."}``.
"""

from __future__ import annotations

from serving.errors import SoftserveError, error_answer, status_line

HEADER_LIMIT = 64 * 1024  # bytes before the blank line that ends a request's headers
CHUNK_LINE_LIMIT = 1024  # bytes of a chunk-size line (with its extensions)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# What ``frame`` returns while the headers are whole, the body is not, and the client waits for
# "100 Continue" before it sends the body.
AWAIT_CONTINUE = (-1, False, -1)

_HEX = frozenset(b"0123456789abcdefABCDEF")


class FramingError(Exception):
    """A request whose end cannot be found: answered with ``status``, then the connection
    closes (where the next request would start is not known)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def empty_lines(buf: bytes | bytearray) -> int:
    """How many bytes at the start of ``buf`` are empty lines, which RFC 9112 2.2 lets a server
    ignore before a request line: CRLF, or a bare LF (with any CRs before it). CRs at the very
    end are not counted: their LF may not have arrived yet. Raises nothing."""
    blank = len(buf) - len(buf.lstrip(b"\r\n"))
    return buf.rfind(b"\n", 0, blank) + 1


def frame(buf: bytearray, max_body: int,
          progress: list[int] | None = None) -> tuple[int, bool, int] | None:
    """Where the first request in ``buf`` ends, as ``(end, body_missing, body_start)``:

    - ``body_start`` is where a Content-Length body starts (``end`` when there is no body), -1
      for any other framing (chunked, or a coding gunicorn refuses), so that the caller splits
      head and body without parsing again;
    - ``body_missing`` is true when the body is larger than ``max_body``, or its coding is one
      gunicorn refuses: the request is handed over without its body (``end`` is where its
      headers end, or the end of ``buf`` for such a coding), for the application or gunicorn's
      parser to refuse, and the connection closes after the answer.

    None while the request is incomplete; ``AWAIT_CONTINUE`` while it is incomplete and its
    client waits for "100 Continue" (HTTP/1.1 only, RFC 9110 15.2). ``progress`` (``[0, 0]``
    for a new request, reset by the caller once the request is taken out of ``buf``) lets the
    scan of a chunked body resume where the last call stopped instead of at the body's start.
    Raises FramingError: 431 for headers or chunked trailers over ``HEADER_LIMIT``, 413 for a
    chunked body over ``max_body``, 400 for anything else that cannot be framed."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > HEADER_LIMIT:
            raise FramingError(431, f"request headers larger than {HEADER_LIMIT} bytes")
        return None
    if head_end > HEADER_LIMIT:
        raise FramingError(431, f"request headers larger than {HEADER_LIMIT} bytes")
    body_start = head_end + 4
    head = bytes(buf[:head_end]).lower()
    line_end = head.find(b"\r\n")
    http_1_0 = (head[:line_end] if line_end >= 0 else head).endswith(b" http/1.0")
    # RFC 9110 15.2: no 1xx answers to an HTTP/1.0 client.
    expects = (not http_1_0 and b"\r\nexpect:" in head
               and b"100-continue" in (_header(head, b"expect") or b""))
    coding = _header(head, b"transfer-encoding")
    length = _header(head, b"content-length")
    if coding is not None and length is not None:
        raise FramingError(400, "both Content-Length and Transfer-Encoding")
    if coding is not None:
        if coding.rsplit(b",", 1)[-1].strip() != b"chunked":
            # gunicorn's parser refuses it (400, or 501); the connection closes after.
            return len(buf), True, -1
        end = _chunked_end(buf, body_start, max_body, expects, progress)
        return None if end is None else (end, False, -1)  # end -1: AWAIT_CONTINUE
    if length is None:
        return body_start, False, body_start
    if not length.isdigit():
        raise FramingError(400, "Content-Length is not a number")
    size = int(length)
    if size > max_body:
        return body_start, True, body_start
    if len(buf) < body_start + size:
        return AWAIT_CONTINUE if expects else None
    return body_start + size, False, body_start


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of a header in ``head`` (lower-cased, starting at the request line), or None.
    Raises FramingError (400) if it appears twice."""
    key = b"\r\n" + name + b":"
    at = head.find(key)
    if at < 0:
        return None
    if head.find(key, at + 1) >= 0:
        raise FramingError(400, f"more than one {name.decode()} header")
    end = head.find(b"\r\n", at + len(key))
    return head[at + len(key): end if end >= 0 else len(head)].strip()


def _chunked_end(buf: bytearray, pos: int, max_body: int, expects: bool,
                 progress: list[int] | None) -> int | None:
    """Where a chunked body starting at ``pos`` ends; None while incomplete, -1 while incomplete
    and the client waits for "100 Continue". Chunk sizes are read as gunicorn's chunked reader
    reads them: hex digits only, whitespace only before a ``;`` that starts extensions; every
    chunk's data is followed by CRLF. Raises FramingError (400, 413, 431)."""
    total = 0
    if progress is not None and progress[0] > pos:
        pos, total = progress
    waiting = -1 if expects else None
    while True:
        chunk_start, total_before = pos, total
        if progress is not None:
            progress[0], progress[1] = chunk_start, total_before
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if len(buf) - pos > CHUNK_LINE_LIMIT:
                raise FramingError(400, "chunk size line too long")
            return waiting
        size_text, *extension = bytes(buf[pos:line_end]).split(b";", 1)
        if extension:
            size_text = size_text.rstrip(b" \t")
        if not size_text or not _HEX.issuperset(size_text):
            raise FramingError(400, "invalid chunk size")
        size = int(size_text, 16)
        total += size
        if total > max_body:
            raise FramingError(413, f"request body larger than {max_body} bytes")
        if size == 0:
            if buf[line_end + 2: line_end + 4] == b"\r\n":
                return line_end + 4
            trailer_end = buf.find(b"\r\n\r\n", line_end + 2)
            if trailer_end < 0:
                if len(buf) - line_end > HEADER_LIMIT:
                    raise FramingError(431, "chunked trailers too large")
                return None
            return trailer_end + 4
        data_end = line_end + 2 + size
        if len(buf) < data_end + 2:
            return waiting
        if buf[data_end: data_end + 2] != b"\r\n":
            raise FramingError(400, "chunk data not followed by CRLF")
        pos = data_end + 2


def error_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer with softserve's JSON error (``serving.errors.error_answer``,
    as the app renders its own), which closes the connection. Raises nothing."""
    status, headers, body = error_answer(SoftserveError(message, status))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (f"HTTP/1.1 {status_line(status)}\r\n{head}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode("latin-1") + body
