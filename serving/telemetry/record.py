"""One record per request: what the access log and the metrics say about it.

``ObservedApp`` (access_log.py) creates it, puts it in the WSGI environ under ``RECORD_KEY``
before anything else sees the request, and reads it once the answer is built. The stages inside
fill in what only they know: the route (``serving.fastpath``, or the matched Flask rule, see
``serving.routes.responses.name_flask_route``), the model version that answered and the time
each inference stage took (``serving.routes.inference``). Everything inside ``ObservedApp`` can
rely on finding it. This module imports no web framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.model import LoadedModel

RECORD_KEY = "softserve.record"
UNMATCHED = "<unmatched>"  # the route of a request no route took


# One per request, so slots. Creating it costs ~0.2 µs (the two tuples it replaced, ~0.05 µs),
# but ObservedApp no longer makes four environ look-ups and an 8-argument call: the middleware
# costs ~6.5 µs a single-row /predict (telemetry and buffered access log on), as before.
@dataclass(slots=True)
class RequestRecord:
    method: str  # as the client sent it (the metrics label an unknown one "other")
    route: str = UNMATCHED  # the route's rule, as Flask spells it
    model: str | None = None  # the model that was asked, once resolved
    version: str | None = None  # and its concrete version
    rows: int | None = None  # rows predicted: set only once the model answered
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0
    status: int = 500  # HTTP status code of the answer
    seconds: float = 0.0  # from receiving the request to its response body
    request_bytes: int = 0  # as its Content-Length declared
    response_bytes: int = 0
    request_id: str = ""  # the X-Request-ID answered (the client's, or one made up)
    # Work to do once the answer is on its way (a shadow model's run, a prediction-log record):
    # see ``after_answer``. None until a stage adds some.
    after: list[Callable[[], None]] | None = None
    # Set by a model's traffic policy (serving.repository.Traffic) for a request naming no
    # version: how its version was chosen ("production", "canary", "latest"), and the shadow
    # version its rows run on after the answer.
    target: str | None = None
    shadow: LoadedModel | None = None

    def after_answer(self, task: Callable[[], None]) -> None:
        """Run ``task`` after this request's answer is sent, never before and never on the
        client's time: softserve's worker runs it before it next waits for events; any other
        WSGI server when it closes the response (PEP 3333 ``close``). A task that raises is
        logged (logger ``softserve.after``) and never reaches the client."""
        if self.after is None:
            self.after = [task]
        else:
            self.after.append(task)
