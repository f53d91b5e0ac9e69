"""Charts as inline SVG and HTML, drawn on the server from a version's metadata.

No charting library: the page draws three simple things (a loss curve, a confusion matrix, the
"try it" probabilities, the last one in ``static/ui.js``), each a few dozen lines here, which
keeps every byte the page needs inside softserve (no CDN, no vendored 200 kB bundle to keep up
to date and audit) and lets the page's Content-Security-Policy forbid everything else.
Colours come from classes the stylesheet defines (the policy forbids inline styles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

# The loss curve's drawing area (SVG user units; the SVG scales to its box).
_WIDTH, _HEIGHT = 480, 214
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 44, 12, 46
_MOST_POINTS = 240  # a longer curve is thinned to this many points: the line looks the same
HEAT_LEVELS = 10  # ui.css defines .heat0 .. .heat9
MOST_MATRIX_CLASSES = 30  # a larger confusion matrix is summarized, not drawn


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (metadata written by hand may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _thin(points: Sequence[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    if len(points) <= most:
        return list(points)
    step = (len(points) - 1) / (most - 1)
    return [points[round(i * step)] for i in range(most)]


def _polyline(points: Sequence[tuple[float, float]], css_class: str) -> str:
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline class="{css_class}" points="{coordinates}"/>'


def loss_curve_svg(curve: Any, title: str) -> Markup | None:
    """The training loss per epoch (left axis), and the validation loss and accuracy where the
    curve records them (accuracy on the right axis, 0 to 1); None without two usable epochs."""
    if not isinstance(curve, list):
        return None
    entries = [e for e in curve if isinstance(e, dict) and _number(e.get("loss")) is not None]
    if len(entries) < 2:
        return None
    epochs = [_number(e.get("epoch")) for e in entries]
    xs = [float(i) if x is None else x for i, x in enumerate(epochs)]
    series = {key: [(x, _number(e.get(key))) for x, e in zip(xs, entries)]
              for key in ("loss", "validation_loss", "validation_accuracy")}
    losses = [v for key in ("loss", "validation_loss") for _, v in series[key] if v is not None]
    top = max(losses) or 1.0
    x0, x1 = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    inner_w, inner_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def at(x: float, y: float, scale: float) -> tuple[float, float]:
        return (_LEFT + (x - x0) / (x1 - x0) * inner_w, _TOP + inner_h * (1 - y / scale))

    parts = [f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{inner_w}" height="{inner_h}"/>']
    for fraction in (0, 0.5, 1):
        y = _TOP + inner_h * (1 - fraction)
        parts.append(f'<text class="tick" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{top * fraction:.3g}</text>")
    legend = [("loss", "loss", "training loss")]
    for key, css, label in (("validation_loss", "val-loss", "validation loss"),
                            ("validation_accuracy", "val-acc", "validation accuracy")):
        if any(v is not None for _, v in series[key]):
            legend.append((key, css, label))
    for key, css, _label in legend:
        scale = 1.0 if key == "validation_accuracy" else top
        points = [at(x, v, scale) for x, v in series[key] if v is not None]
        parts.append(_polyline(_thin(points, _MOST_POINTS), css))
    if any(key == "validation_accuracy" for key, _, _ in legend):
        for fraction in (0, 1):
            y = _TOP + inner_h * (1 - fraction)
            parts.append(f'<text class="tick" x="{_WIDTH - _RIGHT + 4}" y="{y + 4:.1f}">'
                         f"{fraction:.0%}</text>")
    axis_y = _TOP + inner_h + 14
    parts.append(f'<text class="tick" x="{_LEFT}" y="{axis_y}">epoch {x0:g}</text>')
    parts.append(f'<text class="tick" x="{_WIDTH - _RIGHT}" y="{axis_y}" '
                 f'text-anchor="end">{x1:g}</text>')
    x = _LEFT
    for _key, css, label in legend:
        parts.append(f'<line class="{css}" x1="{x}" y1="{_HEIGHT - 12}" x2="{x + 16}" '
                     f'y2="{_HEIGHT - 12}"/><text class="tick" x="{x + 20}" '
                     f'y="{_HEIGHT - 8}">{label}</text>')
        x += 28 + 6 * len(label)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class ConfusionMatrix:
    """A confusion matrix ready for the page: rows are true classes, columns predicted; each
    cell's heat is its share of its row (recall's view), in ``HEAT_LEVELS`` steps."""

    split: str
    labels: list[str]
    rows: list[list[tuple[int, int]]]  # (count, heat level)
    drawn: bool  # False for more than MOST_MATRIX_CLASSES classes: only the summary is shown
    total: int
    correct: int


def confusion_matrix(metrics: Any) -> ConfusionMatrix | None:
    """The ``metrics.confusion_matrix`` of a version's metadata, or None if absent or not a
    square matrix of counts matching its labels."""
    record = metrics.get("confusion_matrix") if isinstance(metrics, dict) else None
    if not isinstance(record, dict):
        return None
    labels, matrix = record.get("labels"), record.get("matrix")
    if not isinstance(labels, list) or not isinstance(matrix, list) or \
            len(matrix) != len(labels) or not labels:
        return None
    k = len(labels)
    counts: list[list[int]] = []
    for row in matrix:
        if not isinstance(row, list) or len(row) != k or \
                not all(isinstance(c, int) and not isinstance(c, bool) for c in row):
            return None
        counts.append(row)
    drawn = k <= MOST_MATRIX_CLASSES
    rows = []
    if drawn:
        for row in counts:
            total = sum(row) or 1
            rows.append([(c, min(HEAT_LEVELS - 1, round(c / total * (HEAT_LEVELS - 1))))
                         for c in row])
    return ConfusionMatrix(str(record.get("split", "")), [str(label) for label in labels], rows,
                           drawn, sum(map(sum, counts)), sum(counts[i][i] for i in range(k)))
