"""Naming a compute device: what exists here is accepted, anything else is one readable line."""

from __future__ import annotations

import pytest

from playground import devices
from playground.devices import DeviceInfo, available_devices, parse_device
from playground.errors import UserError

FAKE = [DeviceInfo("cuda:0", "CUDA 0: Fake GPU"), DeviceInfo("cuda:1", "CUDA 1: Fake GPU"),
        DeviceInfo("cpu", "CPU")]


def test_the_devices_that_exist_here_are_accepted():
    keys = [d.key for d in available_devices()]
    assert keys[-1] == "cpu"
    for key in keys:
        assert parse_device(key) == key
        assert parse_device(f"  {key.upper()} ") == key
    assert parse_device("auto") == keys[0] and parse_device("") == keys[0]


@pytest.mark.parametrize("text", ["cuda:7", "tpu", "mps", "cuda:x", "gpu", "cpu:0"])
def test_a_device_that_is_not_here_is_refused_with_the_list(text, monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda: FAKE)
    with pytest.raises(UserError) as info:
        parse_device(text)
    message = str(info.value)
    assert "\n" not in message and text in message
    for d in FAKE:
        assert d.key in message


def test_cuda_alone_is_the_first_gpu(monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda: FAKE)
    assert parse_device("cuda") == "cuda:0"
    assert parse_device("auto") == "cuda:0"
    assert parse_device("cuda:01") == "cuda:1"


def test_no_gpu_means_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda: [DeviceInfo("cpu", "CPU")])
    with pytest.raises(UserError, match="cpu"):
        parse_device("cuda")


def test_a_cgroup_quota_caps_the_cores_torch_is_given(tmp_path, monkeypatch):
    from playground import devices

    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(64)))
    (tmp_path / "cpu.max").write_text("200000 100000\n")  # 2 cores' worth of a 64-core host
    assert devices.cgroup_cpu_limit(str(tmp_path)) == 2
    assert devices.usable_cores(str(tmp_path)) == 2
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 cores round up
    assert devices.usable_cores(str(tmp_path)) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert devices.cgroup_cpu_limit(str(tmp_path)) is None and devices.usable_cores(str(tmp_path)) == 64
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert devices.usable_cores(str(tmp_path)) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1 "unlimited"
    assert devices.usable_cores(str(tmp_path)) == 64
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: {0})
    assert devices.usable_cores(str(tmp_path)) == 1
