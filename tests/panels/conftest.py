"""A main window with its own settings file, for the panel tests."""

import pytest

from playground.app import AppContext, MainWindow
from playground.settings import Settings


@pytest.fixture
def window(qtbot, tmp_path):
    settings = Settings(tmp_path / "settings.json")
    win = MainWindow(AppContext(settings))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
