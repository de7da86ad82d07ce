"""The app's settings: one JSON file of plain values, and panel configs read back from it safely.

Why not QSettings: PySide's QSettings stores a Python object it cannot map to a Qt type
by pickling it, and reading the file back unpickles it, so a crafted settings file runs
code when the app starts. Here the file is JSON: reading it can only ever give dicts,
lists, strings, numbers, booleans and None. Every value is checked again where it is
used: a panel's settings come back through :func:`load_dataclass`, which keeps each field
only when it has the field's type (anything else falls back to the default, with a
message), so a damaged or tampered file never stops the window from opening.

No Qt in here: the ML core and the command line may read settings too.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import stat
import sys
import types
import typing
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Set this to keep the settings somewhere else (a folder; the file is settings.json in it).
CONFIG_DIR_ENV = "PLAYGROUND_CONFIG_DIR"

#: A settings file larger than this is not read (it cannot be ours).
MAX_SETTINGS_BYTES = 8 * 2**20

JSON_TYPES = (str, int, float, bool, type(None), list, dict)


def default_path() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        folder = Path(override)
    else:
        from platformdirs import user_config_dir

        folder = Path(user_config_dir("deep-learning-playground", "DeepLearningPlayground"))
    return folder / "settings.json"


def _finite_number(value: Any) -> bool:
    """An int or float that is a finite float (a 400-digit int from JSON is not: float() overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max
    return math.isfinite(value)


def _is_json_value(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (str, int, bool, type(None))):
        return True
    if isinstance(value, list):
        return all(_is_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v, depth + 1) for k, v in value.items())
    return False


class Settings:
    """Key -> JSON value, kept in one file (written atomically on :meth:`sync`).

    Keys are plain strings; panels use ``"<panel>"`` for their config dataclass and
    ``"<panel>/<name>"`` for anything else. ``problems`` lists what could not be read
    (shown once in the status bar) instead of raising.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.problems: list[str] = []
        self._values: dict[str, Any] = self._read()
        self._dirty = False

    def _read(self) -> dict[str, Any]:
        try:
            # Not a regular file (a FIFO would block, /dev/zero would never end): not ours.
            if not stat.S_ISREG(self.path.stat().st_mode):
                self.problems.append(f"The settings file {self.path} is not a regular file; using the defaults.")
                return {}
            with open(self.path, "rb") as f:
                raw = f.read(MAX_SETTINGS_BYTES + 1)
        except FileNotFoundError:
            return {}
        except (OSError, MemoryError) as exc:
            self.problems.append(f"Could not read the settings ({exc}); using the defaults.")
            return {}
        if len(raw) > MAX_SETTINGS_BYTES:
            self.problems.append(f"The settings file {self.path} is too large to be ours; using the defaults.")
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError, MemoryError) as exc:
            self.problems.append(f"The settings file {self.path} is not readable JSON ({type(exc).__name__}); "
                                 "using the defaults.")
            return {}
        if not isinstance(data, dict):
            self.problems.append(f"The settings file {self.path} does not hold a JSON object; using the defaults.")
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str)}

    def get(self, key: str, default: Any = None) -> Any:
        """The stored JSON value (of whatever type the file holds: check it), or ``default``."""
        return self._values.get(key, default)

    def get_typed(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The stored value if it is of ``kind`` (bool is not taken for int), else ``default``."""
        value = self._values.get(key, default)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            return default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            if not _finite_number(value):
                return default
            value = float(value)
        return value if isinstance(value, kinds) else default

    def set(self, key: str, value: Any) -> None:
        if not _is_json_value(value):
            raise TypeError(f"Setting {key!r}: {type(value).__name__} is not a plain JSON value")
        if self._values.get(key, _MISSING) != value:
            self._values[key] = value
            self._dirty = True

    def get_bytes(self, key: str) -> bytes | None:
        """Bytes stored with :meth:`set_bytes` (base64 text), None when absent or damaged."""
        raw = self._values.get(key)
        if not isinstance(raw, str):
            return None
        try:
            return base64.b64decode(raw.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None

    def set_bytes(self, key: str, value: bytes) -> None:
        self.set(key, base64.b64encode(bytes(value)).decode("ascii"))

    def remove(self, key: str) -> None:
        if self._values.pop(key, _MISSING) is not _MISSING:
            self._dirty = True

    def keys(self) -> list[str]:
        return list(self._values)

    def sync(self) -> bool:
        """Write the file (atomically) if anything changed. Returns False if it could not be written."""
        if not self._dirty and self.path.exists():
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._values, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("Could not write the settings to %s: %s", self.path, exc)
            return False
        self._dirty = False
        return True

    def file_name(self) -> str:
        return str(self.path)


_MISSING = object()


# -- a panel's config dataclass <-> plain JSON ------------------------------------------------
def dump_dataclass(obj: Any) -> dict[str, Any]:
    """A config dataclass as a dict of JSON values (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dump_dataclass(value)
        elif isinstance(value, tuple):
            value = list(value)
        if _is_json_value(value):
            out[f.name] = value
    return out


def _matches(value: Any, hint: Any) -> tuple[bool, Any]:
    """Does a JSON value fit a field's type hint? Returns (ok, the value converted)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, converted = _matches(value, arm)
            if ok:
                return True, converted
        return False, None
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = _finite_number(value)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, int]: fixed length
            if len(args) != len(value):
                return False, None
            item_hints = list(args)
        else:  # list[int], tuple[int, ...]
            item_hints = [args[0] if args else Any] * len(value)
        items = [_matches(v, h) for v, h in zip(value, item_hints)]
        if not all(ok for ok, _ in items):
            return False, None
        converted = [v for _, v in items]
        return True, tuple(converted) if origin is tuple else converted
    if origin is dict and isinstance(value, dict):
        return all(isinstance(k, str) for k in value), dict(value)
    return False, None


def load_dataclass(cls: type, raw: Any, defaults: Any = None) -> tuple[Any, list[str]]:
    """Rebuild a config dataclass from stored JSON, field by field.

    A field whose stored value is missing keeps the default; one of the wrong type (a
    string for an int, a list for a bool, NaN for a float) is reset to the default and
    named in the returned problems. Unknown keys are ignored. If the class has a
    ``validate()`` that reports problems (a dict or list of messages), the fields it
    names go back to their defaults too. Never raises for anything the file holds.
    """
    base = defaults if defaults is not None else cls()
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"the saved {cls.__name__} was not a JSON object"]
    hints = typing.get_type_hints(cls)
    values, problems = {}, []
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in raw:
            continue
        hint = hints.get(f.name, Any)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):  # a nested config: field by field too
            inner, inner_problems = load_dataclass(hint, raw[f.name], getattr(base, f.name))
            values[f.name] = inner
            problems += [f"{f.name}.{p}" for p in inner_problems]
            continue
        try:
            ok, converted = _matches(raw[f.name], hint)
        except Exception:  # noqa: BLE001 - whatever a value does, it only costs its own field
            ok, converted = False, None
        if ok:
            values[f.name] = converted
        else:
            problems.append(f"{f.name} (saved as {json.dumps(raw[f.name])[:40]})")
    try:
        obj = dataclasses.replace(base, **values)
    except (TypeError, ValueError) as exc:
        return base, problems + [f"{cls.__name__} could not be rebuilt ({exc})"]
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            bad = validate()
        except Exception as exc:  # noqa: BLE001 - a value validate() did not expect
            return base, problems + [f"{cls.__name__} did not validate ({exc})"]
        names = list(bad) if isinstance(bad, dict) else []
        if bad and not names:  # a list of sentences: the whole config goes back to the defaults
            return base, problems + [str(m) for m in bad]
        reset = {n: getattr(base, n) for n in names if hasattr(base, n)}
        if reset:
            obj = dataclasses.replace(obj, **reset)
            problems += [f"{n} ({bad[n]})" for n in reset]
    return obj, problems
