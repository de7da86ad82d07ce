"""Settings are plain JSON: reading them never builds an object, and wrong values fall back to defaults."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from playground.settings import Settings, dump_dataclass, load_dataclass

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    rows: int = 10
    name: str = "map"

    def validate(self) -> dict:
        return {"rows": "at least 2"} if self.rows < 2 else {}


@dataclass
class Outer:
    lr: float = 0.001
    epochs: int = 5
    log: bool = False
    path: str = ""
    sigma: float | None = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)


def test_round_trip_through_the_file(tmp_path):
    s = Settings(tmp_path / "s.json")
    s.set("outer", dump_dataclass(Outer(lr=0.5, epochs=7, log=True, path="/x", sigma=2.0, inner=Inner(3, "b"))))
    s.set_bytes("geometry", b"\x00\x01\xff")
    assert s.sync()
    again = Settings(tmp_path / "s.json")
    obj, problems = load_dataclass(Outer, again.get("outer"))
    assert problems == []
    assert obj == Outer(lr=0.5, epochs=7, log=True, path="/x", sigma=2.0, inner=Inner(3, "b"))
    assert again.get_bytes("geometry") == b"\x00\x01\xff"


@pytest.mark.parametrize("raw, bad", [
    ({"lr": "fast"}, "lr"), ({"epochs": 2.5}, "epochs"), ({"epochs": True}, "epochs"), ({"log": "yes"}, "log"),
    ({"path": 5}, "path"), ({"sizes": [1, "x"]}, "sizes"), ({"sigma": [1]}, "sigma"),
    ({"inner": {"rows": "ten"}}, "inner.rows"), ({"inner": {"rows": 1}}, "inner.rows"), ({"inner": []}, "inner"),
])
def test_a_wrong_value_goes_back_to_its_default_and_is_named(raw, bad):
    obj, problems = load_dataclass(Outer, raw)
    assert any(p.startswith(bad) for p in problems), problems
    fresh = Outer()
    top = bad.split(".")[0]
    if top != "inner":
        assert getattr(obj, top) == getattr(fresh, top)
    else:
        assert obj.inner.rows == fresh.inner.rows


def test_good_fields_survive_beside_bad_ones():
    obj, problems = load_dataclass(Outer, {"lr": 0.3, "epochs": "many", "inner": {"name": "kept", "rows": None}})
    assert obj.lr == 0.3 and obj.epochs == 5 and obj.inner.name == "kept" and obj.inner.rows == 10
    assert len(problems) == 2


@pytest.mark.parametrize("content", ["[1, 2, 3]", "not json {", '"a string"', "", "\x00\x01garbage",
                                     '{"device": {"__class__": "os.system"}}'])
def test_a_damaged_file_is_no_obstacle(tmp_path, content):
    path = tmp_path / "s.json"
    path.write_text(content)
    s = Settings(path)
    assert s.get_typed("device", str, "cpu") == "cpu"
    assert isinstance(s.get("device", None), (dict, type(None)))
    if content.strip().startswith("{"):
        assert s.problems == []
    else:
        assert s.problems and "defaults" in s.problems[0]


def test_only_plain_values_are_stored(tmp_path):
    s = Settings(tmp_path / "s.json")
    with pytest.raises(TypeError):
        s.set("x", object())
    with pytest.raises(TypeError):
        s.set("x", float("nan"))
    with pytest.raises(TypeError):
        s.set("x", {1: "not a string key"})


def _run(code: str, env_dirs: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(env_dirs / "xdg"),
           "PLAYGROUND_CONFIG_DIR": str(env_dirs / "config"), "PLAYGROUND_DATA_DIR": str(env_dirs / "data"),
           "HOME": str(env_dirs / "home")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_crafted_settings_file_runs_nothing_when_the_app_starts(tmp_path):
    """QSettings unpickles stored Python objects; a file planted where the app used to keep its
    settings (and the same bytes inside our JSON) must run nothing when the window opens."""
    marker = tmp_path / "pwned"
    payload_ini = tmp_path / "payload.ini"
    # 1. Make a settings file whose value, when QSettings reads it, runs `touch marker`.
    made = _run(f"""
        import os
        from PySide6.QtCore import QSettings
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        s = QSettings({str(payload_ini)!r}, QSettings.Format.IniFormat)
        for key in ("device", "window/tab", "training/lr", "som/rows"):
            s.setValue(key, Evil())
        s.sync()
    """, tmp_path)
    assert made.returncode == 0, made.stderr
    assert not marker.exists()
    # 2. Prove the payload is live: reading it with QSettings runs the command.
    proof = _run(f"""
        from PySide6.QtCore import QSettings
        QSettings({str(payload_ini)!r}, QSettings.Format.IniFormat).value("device")
    """, tmp_path)
    assert proof.returncode == 0, proof.stderr
    assert marker.exists(), "the crafted file should run code under QSettings (else this test proves nothing)"
    marker.unlink()
    # 3. Plant it where QSettings(ORG_NAME, "playground") looked, and its text inside our JSON file.
    legacy = tmp_path / "xdg" / "DeepLearningPlayground" / "playground.conf"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(payload_ini.read_bytes())
    ours = tmp_path / "config" / "settings.json"
    ours.parent.mkdir(parents=True)
    ours.write_text(json.dumps({"device": payload_ini.read_text(), "training": {"config": {"lr": "@Variant(x)"}},
                                "window/tab": [1]}))
    started = _run("""
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from playground.app import MainWindow
        win = MainWindow()
        win.show()
        app.processEvents()
        print("tabs", win.tabs.count(), "device", win.ctx.device)
        win.close()
    """, tmp_path)
    assert started.returncode == 0, started.stderr
    from playground.panels import PANELS

    assert f"tabs {len(PANELS)}" in started.stdout
    assert not marker.exists()


def uses_qsettings(source: str) -> bool:
    import ast

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "QSettings" or \
                isinstance(node, ast.Attribute) and node.attr == "QSettings" or \
                isinstance(node, ast.alias) and node.name == "QSettings":
            return True
    return False


def test_the_package_never_uses_qsettings():
    assert uses_qsettings("from PySide6.QtCore import QSettings") and uses_qsettings("QtCore.QSettings()")
    assert not uses_qsettings('"""QSettings in a docstring is fine"""')
    for path in (REPO / "playground").rglob("*.py"):
        assert not uses_qsettings(path.read_text(encoding="utf-8")), path


def test_a_huge_whole_number_for_a_float_is_a_wrong_value_not_a_crash(tmp_path):
    huge = int("9" * 400)  # JSON reads it as an int; float() of it overflows
    obj, problems = load_dataclass(Outer, {"lr": huge, "sigma": huge, "epochs": 4})
    assert obj.lr == Outer().lr and obj.sigma is None and obj.epochs == 4
    assert {p.split(" ")[0] for p in problems} == {"lr", "sigma"}
    (tmp_path / "s.json").write_text('{"x": ' + "9" * 400 + "}")
    assert Settings(tmp_path / "s.json").get_typed("x", float, 1.5) == 1.5


def test_a_settings_path_that_is_not_a_regular_file_is_skipped(tmp_path):
    (tmp_path / "s.json").symlink_to("/dev/zero")
    s = Settings(tmp_path / "s.json")
    assert s.get("device") is None and "not a regular file" in s.problems[0]


def test_a_modal_dialog_in_a_test_fails_at_once_instead_of_hanging(qtbot):
    from PySide6.QtWidgets import QMessageBox

    with pytest.raises(AssertionError, match="modal dialog"):
        QMessageBox.question(None, "Delete", "Really?")
