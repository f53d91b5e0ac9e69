"""What softserve tells about itself: metrics, V2 statistics, the access log and its own logs,
the prediction log and drift.

- ``record``: the one ``RequestRecord`` per request that the stages fill in;
- ``recording``: the per-worker ``Telemetry`` recorder and its flush thread;
- ``prometheus``: the metrics in prometheus-client, summed over gunicorn's workers;
- ``statistics``: Triton's statistics extension, read back from those metrics;
- ``access_log``: the WSGI middleware (``ObservedApp``) and the worker's access-log buffer;
- ``logs``: the JSON log format and its set-up;
- ``prediction_log``: what was served and the feedback received, CloudEvents JSON lines;
- ``drift``: the values served counted into each version's training bins, PSI at /metrics.
"""

from serving.telemetry.recording import Telemetry

__all__ = ["Telemetry"]
