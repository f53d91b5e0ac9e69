"""The harness the tests, the benchmark (``python -m bench``) and the soak (``python -m soak.run``)
share: a real gunicorn on a free localhost port (``server``), one request and polling helpers
(``net``), figures of processes from /proc (``processes``) and a tiny real model trained through
the training CLI (``models``).

Nothing here is a pytest fixture: the fixtures, built from these, are in ``tests/conftest.py``.
The tools import it as ``tests.support``, so they run from the repository root.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
