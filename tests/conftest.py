"""Shared test set-up: headless Qt, and every file the app writes kept in a temporary folder."""

import faulthandler
import os
import signal
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")
_tmp = tempfile.mkdtemp(prefix="playground-tests-")
os.environ["PLAYGROUND_DATA_DIR"] = os.path.join(_tmp, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_tmp, "config")  # QSettings on Linux
os.environ.setdefault("PLAYGROUND_DATASET_MIRROR", "http://127.0.0.1:9/")  # never the network

import pytest  # noqa: E402

from playground.devices import configure_torch_threads  # noqa: E402

configure_torch_threads()  # as the app does: one core stays free for the GUI thread


class ModalDialogOpened(AssertionError):
    """A test opened a dialog that waits for a person: headless, it would wait forever."""


# pytest captures the real stderr, so the stacks go to a file (test.sh prints it after a failed run).
_stack_path = os.environ.get("PLAYGROUND_STACK_DUMP") or os.path.join(_tmp, "hung-test-stacks.txt")
_stack_file = open(_stack_path, "w")  # noqa: SIM115 - open for the whole run
#: A test still running after this many seconds is taken as hung: every thread's stack is
#: written and the run ends. (pytest-timeout's limit comes first, but its timer needs the
#: GIL, and a deadlock between the GIL and a Qt mutex never gives it back.)
HUNG_TEST_S = 240


@pytest.fixture(autouse=True)
def _hang_watchdog():
    """Stacks instead of a silent hang: a C-level watchdog for each test (works while a thread
    holds the GIL), and the same dump if test.sh's time limit sends SIGTERM. Set again before
    each test, because a test of the command line installs its own SIGTERM handler."""
    faulthandler.register(signal.SIGTERM, file=_stack_file, all_threads=True, chain=True)
    faulthandler.dump_traceback_later(HUNG_TEST_S, exit=True, file=_stack_file)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _no_modal_dialogs(monkeypatch):
    """Make every modal dialog fail at once instead of hanging the run.

    A modal dialog spins its own event loop; offscreen nobody closes it, and the main
    thread never returns to Python, so not even the test timeout can end it. A test that
    means a dialog to appear patches the one it expects.
    """
    from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog, QMessageBox

    def refuse(*_args, **_kwargs):
        raise ModalDialogOpened("a modal dialog was opened during a test")

    for cls, names in ((QMessageBox, ("question", "warning", "critical", "information", "about", "exec")),
                       (QFileDialog, ("getOpenFileName", "getOpenFileNames", "getSaveFileName",
                                      "getExistingDirectory", "exec")),
                       (QInputDialog, ("getText", "getInt", "getDouble", "getItem", "exec")),
                       (QDialog, ("exec",))):
        for name in names:
            monkeypatch.setattr(cls, name, refuse)


@pytest.fixture
def pool(qtbot):
    from playground.jobs import JobPool

    p = JobPool()
    yield p
    assert p.shutdown(timeout_s=10)
