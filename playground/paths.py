"""Where the app keeps its files: runs, downloaded data sets, settings."""

from __future__ import annotations

import os
from pathlib import Path

#: Set this to keep everything somewhere else (tests use a temporary folder).
DATA_DIR_ENV = "PLAYGROUND_DATA_DIR"

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = REPO_ROOT / "resources"


def data_dir() -> Path:
    """The user's data directory for the app (created on first use)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        path = Path(override)
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("deep-learning-playground", "DeepLearningPlayground"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
