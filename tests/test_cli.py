"""The command line: a device that is not there is one line on stderr and exit code 2, before any work."""

from __future__ import annotations

import pytest

from playground import cli, devices
from playground.devices import available_devices


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--no-save", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "mps"])
def test_a_device_that_does_not_exist_is_one_line_and_exit_code_2(capsys, monkeypatch, device):
    keys = [d.key for d in available_devices()]
    if device in keys:
        pytest.skip(f"{device} exists on this machine")
    trained = []
    monkeypatch.setattr("playground.ml.training.trainer.run_to_end", lambda *a, **k: trained.append(1))
    rc, out, err = run_cli(capsys, "--device", device)
    assert rc == 2
    assert trained == [] and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert device in lines[0] and "--device" in lines[0]
    for key in keys:
        assert key in lines[0]


def test_a_device_that_exists_is_used(capsys, monkeypatch):
    seen = []

    def fake_run_to_end(cfg, store=None, data=None, on_item=None):
        seen.append(cfg.device)
        raise KeyboardInterrupt  # stop at once: only the device choice is under test

    monkeypatch.setattr("playground.ml.training.trainer.run_to_end", fake_run_to_end)
    monkeypatch.setattr(devices, "available_devices", lambda: [devices.DeviceInfo("cpu", "CPU")])
    import signal

    before = signal.getsignal(signal.SIGINT)
    try:
        rc, _, err = run_cli(capsys, "--device", "CPU")
    finally:
        signal.signal(signal.SIGINT, before)  # the stopped command line ignores further Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert seen == ["cpu"]
    assert rc == 130 and "stopped" in err
