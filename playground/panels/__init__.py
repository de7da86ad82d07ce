"""The registry of panels: which tabs the window shows, in this order.

A new tab adds one line to :data:`PANELS` (see ``docs/adding-a-tab.md``). The window
imports and builds each one through :func:`build_panel`: a panel that fails to import
or to build becomes an :class:`~playground.panels.base.ErrorPanel` tab with a readable
message (and the traceback in the log), never a missing tab or a window that does not open.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from ..errors import friendly_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PanelSpec:
    module: str  # e.g. "playground.panels.som"
    cls: str  # the Panel subclass in it
    title: str  # the tab's title (with an & mnemonic), also used when the panel cannot be built


PANELS: list[PanelSpec] = [
    PanelSpec("playground.panels.training", "TrainingPanel", "&Training"),
    PanelSpec("playground.panels.som", "SOMPanel", "&SOM"),
    PanelSpec("playground.panels.drag", "DragPanel", "&Drag"),
    PanelSpec("playground.panels.separation", "SeparationPanel", "S&eparation"),
    PanelSpec("playground.panels.diffusion", "DiffusionPanel", "D&iffusion"),
    PanelSpec("playground.panels.chat", "ChatPanel", "C&hat"),
]


def build_panel(spec: PanelSpec, ctx):
    """The panel's widget, or an ErrorPanel saying why it could not be made."""
    from .base import ErrorPanel

    try:
        module = importlib.import_module(spec.module)
        cls = getattr(module, spec.cls)
    except Exception as exc:  # noqa: BLE001 - ImportError, SyntaxError, a missing name, ...
        log.exception("The %s panel could not be imported", spec.title)
        return ErrorPanel(spec.title, f"It failed to load: {friendly_message(exc)}")
    try:
        panel = cls(ctx)
        if hasattr(panel, "load_settings"):
            panel.load_settings()
        return panel
    except Exception as exc:  # noqa: BLE001
        log.exception("The %s panel could not be built", spec.title)
        return ErrorPanel(spec.title, f"It failed to start: {friendly_message(exc)}")
