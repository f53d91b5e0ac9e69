"""The loss-curve picture: a title that names the data file and the rows, and always fits."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from training.plots import loss_curve_figure, loss_curve_title

LONG_PATH = ("/home/someone/projects/field-work/measurements/2024/summer/cleaned/exports/"
             "flowers_measured_in_the_field_summer_2024_final_v3.csv")
HISTORY = [{"epoch": e, "loss": 1 / (e + 1), "validation_accuracy": 0.9} for e in range(50)]


def test_title_names_the_file_and_the_training_and_validation_rows() -> None:
    title = loss_curve_title("flowers", LONG_PATH, 120, 30, 1000, 0.1, True)
    assert title == ("flowers: flowers_measured_in_the_field_summer_2024_final_v3.csv, "
                     "120 training + 30 validation rows, 1000 epochs, lr 0.1, standardized")
    assert loss_curve_title("toy", "toy", 8, 0, 1000, 0.1, False) == (
        "toy: toy, 8 training rows (no validation split), 1000 epochs, lr 0.1")


@pytest.mark.parametrize("title", [
    loss_curve_title("flowers_measured_in_the_field_summer_2024_final_v3", LONG_PATH, 120, 30,
                     1000, 0.1, False),
    "x" * 200,  # one word longer than a line is broken too
])
def test_a_long_title_is_never_cut_off(title: str) -> None:
    fig = loss_curve_figure(HISTORY, title)
    try:
        fig.canvas.draw()
        box = fig.axes[0].title.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
        assert fig.axes[0].title.get_text().replace("\n", "").replace(" ", "") == \
            title.replace(" ", "")
    finally:
        plt.close(fig)
