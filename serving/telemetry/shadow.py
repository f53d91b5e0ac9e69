"""A shadow run: the rows a client's answer came from, replayed on the shadow version once the
answer is sent (``RequestRecord.after_answer``), compared with what the client got, recorded —
never answered, never raised."""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.telemetry.recording import Telemetry

if TYPE_CHECKING:
    from serving.model import LoadedModel

log = logging.getLogger("softserve.shadow")
_warned: set[tuple[str, str]] = set()  # (model, shadow version) whose failure was logged


def shadow_task(telemetry: Telemetry | None, primary: LoadedModel, shadow: LoadedModel,
                rows: Any, probabilities: Any, classes: Any) -> Callable[[], None]:
    """The work to run after the answer: ``shadow`` on ``rows``, compared with ``primary``'s
    ``probabilities`` and ``classes``. The task raises nothing: a failing shadow is counted
    (outcome "fail") and logged once per version and worker."""

    def run() -> None:
        started = perf_counter()
        try:
            shadow_probabilities, shadow_classes = shadow.predict(rows)
            if shadow_probabilities.shape != probabilities.shape:
                raise ValueError(f"the shadow answers with shape "
                                 f"{list(shadow_probabilities.shape)}, the answer had "
                                 f"{list(probabilities.shape)}")
            agreed = int(np.count_nonzero(shadow_classes == classes))
            diff = float(np.max(np.abs(shadow_probabilities - probabilities))) if len(rows) \
                else 0.0
        except Exception as exc:  # noqa: BLE001 — whatever the shadow's graph raises
            if (shadow.name, shadow.version) not in _warned:
                _warned.add((shadow.name, shadow.version))
                log.warning("shadow version %s of model %s failed (counted, never answered; "
                            "logged once): %s", shadow.version, shadow.name, exc,
                            extra={"model": shadow.name, "version": shadow.version})
            if telemetry is not None:
                telemetry.shadow_compared(primary.name, primary.version, shadow.version, 0, 0,
                                          0.0, perf_counter() - started, ok=False)
            return
        if telemetry is not None:
            telemetry.shadow_compared(primary.name, primary.version, shadow.version, len(rows),
                                      agreed, diff if diff == diff else 1.0,  # NaN: the most
                                      perf_counter() - started, ok=True)

    return run
