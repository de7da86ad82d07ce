"""Make the README's screenshots: docs/screenshots/{training,som,drag,separation}.png (offscreen Qt).

    python scripts/screenshots.py [training] [som] [drag] [separation]

Each tab is driven as a user would (the form, then Start), waited for, and grabbed.
Runs and settings go to a temporary folder, not the user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PLAYGROUND_DATA_DIR", tempfile.mkdtemp(prefix="shots-"))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def wait_for(app, done, timeout_s: float = 300) -> None:
    import time

    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the tab did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def settle(app, seconds: float = 1.0) -> None:
    """Let layouts and the status bar catch up before a grab."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def choose(combo, key) -> None:
    combo.setCurrentIndex(combo.findData(key))


def main(which: list[str]) -> None:
    from PySide6.QtWidgets import QApplication

    from playground.app import AppContext, MainWindow
    from playground.panels.som import SOMPanel
    from playground.panels.training import TrainingPanel

    app = QApplication.instance() or QApplication([])
    from playground.settings import Settings

    settings = Settings(tempfile.mktemp(suffix=".json"))
    win = MainWindow(AppContext(settings))
    win.resize(1600, 900)  # room for the Learn panel beside the plots
    win.show()
    OUT.mkdir(parents=True, exist_ok=True)
    if "training" in which:
        panel = win.panel(TrainingPanel)
        win.tabs.setCurrentWidget(panel)
        choose(panel.dataset, "digits")
        choose(panel.model, "lenet")
        panel.epochs.setValue(12)
        panel.start()
        wait_for(app, lambda: not panel.running)
        settle(app)
        win.grab().save(str(OUT / "training.png"))
    if "som" in which:
        panel = win.panel(SOMPanel)
        win.tabs.setCurrentWidget(panel)
        choose(panel.source, "digits")
        choose(panel.topology, "hexagonal")
        choose(panel.mode, "batch")
        panel.rows.setValue(20)
        panel.cols.setValue(24)
        panel.epochs.setValue(15)
        panel.start()
        wait_for(app, lambda: not panel.running)
        choose(panel.view_choice, "prototypes")
        panel.sample_list.setCurrentRow(4)
        settle(app)
        win.grab().save(str(OUT / "som.png"))
    if "drag" in which:
        from playground.panels.drag import DragPanel

        panel = win.panel(DragPanel)
        win.tabs.setCurrentWidget(panel)
        wait_for(app, lambda: panel.current is not None)
        panel.seed.setValue(3)
        wait_for(app, lambda: panel.render_job is None or panel.render_job.is_done)
        settle(app)
        size = panel.current.image.shape[1]
        for x, y in ((0.40, 0.62), (0.30, 0.55), (0.62, 0.40), (0.70, 0.32)):  # two handle -> target pairs
            panel.add_point(x * size, y * size)
        panel.max_steps.setValue(300)
        panel.start()
        wait_for(app, lambda: not panel.running or "Step 12" in panel.info.text())
        settle(app, 0.3)
        win.grab().save(str(OUT / "drag.png"))
        panel.stop()
        wait_for(app, lambda: not panel.running)
    if "separation" in which:
        from playground.panels.separation import SeparationPanel

        panel = win.panel(SeparationPanel)
        win.tabs.setCurrentWidget(panel)
        wait_for(app, lambda: panel.picker.current is not None and not panel.running)
        settle(app, 2.0)
        wait_for(app, lambda: not panel.running)
        panel.start()
        wait_for(app, lambda: not panel.running)
        settle(app)
        win.grab().save(str(OUT / "separation.png"))
    if "diffusion" in which:
        from playground.panels.diffusion import DiffusionPanel

        panel = win.panel(DiffusionPanel)
        win.tabs.setCurrentWidget(panel)
        wait_for(app, lambda: panel.model is not None and not panel.picker.loading)
        choose(panel.sampler, "ddim")
        panel.steps.setValue(50)
        panel.batch.setValue(16)
        panel.label.setValue(7)
        panel.guidance.setValue(1.5)
        panel.start()
        wait_for(app, lambda: not panel.running)
        panel.slider.setValue(int(panel.slider.maximum() * 0.6))
        settle(app)
        win.grab().save(str(OUT / "diffusion.png"))
    if "chat" in which:
        from playground.panels.chat import ChatPanel

        panel = win.panel(ChatPanel)
        win.tabs.setCurrentWidget(panel)
        wait_for(app, lambda: panel.chat is not None and not panel.picker.loading)
        panel.seed.setValue(1)
        for question in ("请写一首题为《静夜思》的唐诗。", "What does hacker mean?"):
            panel.input.setPlainText(question)
            panel.send()
            wait_for(app, lambda: not panel.running)
        settle(app)
        win.grab().save(str(OUT / "chat.png"))
    win.close()
    print("wrote", ", ".join(str(OUT / f"{w}.png") for w in which))


if __name__ == "__main__":
    main(sys.argv[1:] or ["training", "som", "drag", "separation", "diffusion", "chat"])
