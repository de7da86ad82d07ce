"""A main window with its own settings file, for the panel tests."""

import pytest
from PySide6.QtCore import QSettings

from playground.app import AppContext, MainWindow


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(AppContext(settings))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
