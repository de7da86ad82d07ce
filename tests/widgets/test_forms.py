"""The calm progress bar shows the newest value without repainting at every call."""

from playground.widgets.forms import CalmProgressBar


def test_calm_progress_bar_holds_values_between_repaints(qtbot):
    bar = CalmProgressBar()
    qtbot.addWidget(bar)
    bar.setRange(0, 1000)
    shown = []
    bar.valueChanged.connect(shown.append)
    for v in range(1, 500):
        bar.setValue(v)
    assert bar.value() == 499  # what callers read is always the newest
    assert shown == [1]  # only the first was shown at once
    qtbot.waitUntil(lambda: shown[-1] == 499, timeout=2000)
    assert len(shown) == 2
    bar.setValue(600)  # the interval has ended: shown at once again, or within one interval
    bar.setValue(700)
    bar.setValue(1000)  # the end is shown at once, and nothing older comes after it
    assert shown[-1] == 1000
    qtbot.wait(2 * CalmProgressBar.INTERVAL_MS)
    assert shown[-1] == 1000 and bar.value() == 1000
    bar.setValue(0)
    assert shown[-1] == 0
