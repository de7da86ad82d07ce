"""Shared test set-up: headless Qt, and every file the app writes kept in a temporary folder."""

import os
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


@pytest.fixture
def pool(qtbot):
    from playground.jobs import JobPool

    p = JobPool()
    yield p
    assert p.shutdown(timeout_s=10)
