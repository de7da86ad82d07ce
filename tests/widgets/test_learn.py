"""The Learn side panel: live values in labels, collapsing, and formulas drawn once."""

from __future__ import annotations

import time

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QLabel

from playground.learn import MISSING, Formula, Sheet, Symbol
from playground.learn.som import som_sheet
from playground.learn.training import training_sheet
from playground.widgets.learn import EXPANDED_MIN_WIDTH, STRIP_WIDTH, FormulaCache, LearnPanel


@pytest.fixture
def panel(qtbot):
    p = LearnPanel(cache=FormulaCache())  # its own cache, so render counts start at 0
    qtbot.addWidget(p)
    p.resize(400, 700)
    p.show()
    qtbot.waitExposed(p)
    return p


def _shown(panel: LearnPanel, key: str) -> list[str]:
    labels = panel.value_labels(key)
    assert labels, f"no label shows {key!r}"
    return [label.text() for label in labels]


def test_values_appear_in_their_labels(panel):
    panel.set_sheet(training_sheet("adam", "cosine"))
    assert set(_shown(panel, "lr")) == {MISSING}  # nothing known yet
    panel.update_values({"lr": 0.00123, "loss": 0.5, "step": 10, "no_such_key": 7})
    assert set(_shown(panel, "lr")) == {"0.00123"}  # every row that uses the rate
    assert len(panel.value_labels("lr")) >= 2
    assert _shown(panel, "loss") == ["0.5"]
    assert _shown(panel, "bias1") == [f"{1 - 0.9**10:.6g}"]  # derived from the step
    assert _shown(panel, "beta1") == ["0.9"]  # a constant of the sheet
    assert panel.findChild(QLabel, "value-loss").text() == "0.5"
    panel.update_values({"lr": 0.002})  # a partial update keeps the other values
    assert set(_shown(panel, "lr")) == {"0.002"} and _shown(panel, "loss") == ["0.5"]


def test_nan_and_missing_values_show_a_dash(panel):
    panel.set_sheet(training_sheet("sgd", "constant"))
    panel.update_values({"loss": 1.25, "val_loss": 0.75})
    assert _shown(panel, "val_loss") == ["0.75"]
    panel.update_values({"val_loss": float("nan")})
    assert _shown(panel, "val_loss") == [MISSING]
    assert _shown(panel, "train_loss") == [MISSING]
    assert _shown(panel, "loss") == ["1.25"]
    panel.clear_values()
    assert _shown(panel, "loss") == [MISSING]


def test_values_survive_a_new_sheet(panel):
    panel.set_sheet(som_sheet("gaussian", "online"))
    panel.update_values({"qe": 0.5, "sigma": 2.0, "lr": 0.1})
    panel.set_sheet(som_sheet("bubble", "batch"))
    assert _shown(panel, "qe") == ["0.5"] and _shown(panel, "sigma") == ["2"]
    assert panel.value_labels("lr") == []  # batch mode has no learning rate


def test_collapse_and_expand(panel, qtbot):
    panel.set_sheet(som_sheet("gaussian", "online"))
    assert not panel.collapsed and panel.width() >= EXPANDED_MIN_WIDTH
    with qtbot.waitSignal(panel.collapsedChanged) as blocker:
        panel.set_collapsed(True)
    assert blocker.args == [True] and panel.collapsed
    qtbot.waitUntil(lambda: panel.width() <= STRIP_WIDTH)
    assert not panel.scroll.isVisible()
    with qtbot.assertNotEmitted(panel.collapsedChanged):
        panel.set_collapsed(True)  # no change, no signal
    panel.update_values({"qe": 0.25})  # kept while folded, shown on opening
    with qtbot.waitSignal(panel.collapsedChanged) as blocker:
        panel.toggle.click()
    assert blocker.args == [False] and not panel.collapsed
    qtbot.waitUntil(lambda: panel.width() >= EXPANDED_MIN_WIDTH)
    assert panel.scroll.isVisible()
    assert _shown(panel, "qe") == ["0.25"]


def test_many_updates_are_fast_and_draw_nothing(panel):
    panel.set_sheet(training_sheet("adamw", "warmup_cosine"))
    drawn = panel.cache.renders
    assert drawn > 10  # formulas and symbols were drawn once
    t0 = time.perf_counter()
    for i in range(200):
        panel.update_values({"loss": 1.0 / (i + 1), "lr": 1e-3 * (1 - i / 200), "step": i + 1,
                             "total_steps": 200, "lr0": 1e-3, "grad_norm": float(i)})
    elapsed = time.perf_counter() - t0
    assert panel.cache.renders == drawn
    assert elapsed < 1.0, f"200 updates took {elapsed:.2f} s"
    assert _shown(panel, "loss") == [f"{1 / 200:.4g}"]
    panel.set_sheet(training_sheet("adamw", "warmup_cosine"))  # the same sheet again: all from the cache
    assert panel.cache.renders == drawn


def test_pictures_follow_the_palette(panel):
    panel.set_sheet(som_sheet("triangle", "batch"))
    drawn = panel.cache.renders
    palette = panel.palette()
    palette.setColor(QPalette.ColorRole.WindowText, QColor(200, 30, 30))
    panel.setPalette(palette)
    assert panel.cache.renders > drawn  # drawn again in the new colour
    label = next(lab for lab in panel.scroll.widget().findChildren(QLabel) if not lab.pixmap().isNull())
    image = label.pixmap().toImage()
    inked = [image.pixelColor(x, y) for x in range(image.width()) for y in range(image.height())
             if image.pixelColor(x, y).alpha() == 255]
    assert inked and all(c.red() == 200 and c.green() == 30 for c in inked)


def test_a_formula_that_cannot_be_drawn_says_so_without_its_source(panel):
    broken = r"\frac{1}{"
    panel.set_sheet(Sheet("Broken", [Formula("A broken one", broken, [Symbol("x", "x", "a value")])], "note"))
    texts = [label.text() for label in panel.scroll.widget().findChildren(QLabel)]
    assert "(this formula could not be drawn)" in texts
    assert not any(broken in text for text in texts)
    panel.update_values({"x": 3})
    assert _shown(panel, "x") == ["3"]


def test_no_sheet_shows_a_hint(panel):
    panel.set_sheet(None)
    texts = [label.text() for label in panel.scroll.widget().findChildren(QLabel)]
    assert any("No formulas" in t for t in texts)
    panel.update_values({"lr": 1.0})  # harmless without a sheet


def test_a_figure_stays_above_the_formulas_across_sheets(panel, qtbot):
    figure = QLabel("live diagram")
    panel.set_figure(figure)
    assert panel.figure is figure and panel.isAncestorOf(figure)
    panel.set_sheet(som_sheet("gaussian", "online"))
    panel.set_sheet(training_sheet("adam", "cosine"))  # the old contents are deleted: the figure lives on
    assert panel.isAncestorOf(figure) and figure.text() == "live diagram"
    layout = panel.scroll.widget().layout()
    assert layout.itemAt(0).widget() is figure
    panel.set_figure(None)
    assert panel.figure is None and not panel.isAncestorOf(figure)


def test_the_separation_diagram_paints_the_models_insides(qtbot):
    import numpy as np

    from playground.widgets.separation_diagram import DiagramState, SeparationDiagram

    d = SeparationDiagram()
    qtbot.addWidget(d)
    d.resize(280, 430)
    empty = d.grab().toImage()
    assert d.captions()[1] == "Encoder"
    rng = np.random.default_rng(0)
    d.set_state(DiagramState(64, 16, 999, 4.0, rng.standard_normal(32000).astype(np.float32),
                             rng.random((64, 300)), rng.random((3, 64, 300)), (0.2, 0.3, 0.5),
                             tuple(rng.standard_normal((3, 32000)).astype(np.float32))))
    assert d.captions()[1] == "Encoder U: 64 filters × 16 samples, stride 8"
    assert d.captions()[3] == "Separator (TCN) → 3 masks" and "m3: mean 0.50" in d.captions()[4]
    image = d.grab().toImage()
    assert image != empty   # the pictures are drawn
