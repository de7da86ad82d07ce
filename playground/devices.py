"""Which compute devices exist (CUDA / Apple MPS / CPU) and how much memory is in use."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class DeviceInfo:
    key: str  # a torch device string: "cpu", "cuda:0", "mps"
    label: str  # what the user sees


def available_devices() -> list[DeviceInfo]:
    """Every device torch can use here, the best first. The CPU is always there."""
    import torch

    found: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append(DeviceInfo(f"cuda:{i}", f"CUDA {i}: {torch.cuda.get_device_name(i)}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(DeviceInfo("mps", "Apple MPS"))
    found.append(DeviceInfo("cpu", "CPU"))
    return found


def default_device() -> str:
    return available_devices()[0].key


def resolve_device(wanted: str | None) -> str:
    """``wanted`` if it exists here, otherwise the best device there is (no GPU: the CPU)."""
    keys = [d.key for d in available_devices()]
    return wanted if wanted in keys else keys[0]


def parse_device(text: str) -> str:
    """A device the user named (``--device``) as a torch device key that exists here.

    "auto" (or nothing) is the best device there is; "cuda" means "cuda:0"; case and
    spaces do not matter. A device that does not exist on this machine (``cuda:7``,
    ``tpu``, ``mps`` off a Mac) raises :class:`UserError` with one line that lists the
    devices there are, rather than failing later inside torch with a traceback.
    """
    devices = available_devices()
    keys = [d.key for d in devices]
    wanted = str(text).strip().lower()
    if wanted in ("", "auto"):
        return keys[0]
    match = re.fullmatch(r"cuda(?::(\d{1,4}))?", wanted)
    if match:
        wanted = f"cuda:{int(match.group(1) or 0)}"
    if wanted in keys:
        return wanted
    there = ", ".join(f"{d.key} ({d.label})" for d in devices)
    shown = str(text).strip()[:40] or repr(text)
    raise UserError(f"There is no device {shown!r} on this machine; the devices here are: {there} (or auto).")


def device_label(key: str) -> str:
    for d in available_devices():
        if d.key == key:
            return d.label
    return key


def process_memory_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unknown)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:  # noqa: BLE001
            return 0


def device_memory_bytes(key: str) -> int | None:
    """Memory torch holds on an accelerator, None for the CPU."""
    import torch

    if key.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(torch.device(key)))
    if key == "mps" and hasattr(torch, "mps"):
        try:
            return int(torch.mps.current_allocated_memory())
        except Exception:  # noqa: BLE001
            return None
    return None


def memory_summary(key: str) -> str:
    text = f"RAM {process_memory_bytes() / 2**20:,.0f} MB"
    dev = device_memory_bytes(key)
    if dev is not None:
        text += f" · {key} {dev / 2**20:,.0f} MB"
    return text


def _read_numbers(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """The cores a cgroup CPU quota allows (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    v2 = _read_numbers(os.path.join(root, "cpu.max"))  # "<quota> <period>" or "max <period>"
    v1 = _read_numbers(os.path.join(root, "cpu", "cpu.cfs_quota_us")) + \
        _read_numbers(os.path.join(root, "cpu", "cpu.cfs_period_us"))
    for pair in (v2[:2], v1[:2]):
        try:
            quota, period = float(pair[0]), float(pair[1])
        except (IndexError, ValueError):  # "max", or no such file
            continue
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    return None


def usable_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may really use: its CPU affinity, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the host's cores; a container limited to 2 of 64 would then
    start 63 spinning torch threads on 2 cores, which slows it down a hundredfold.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, cores if limit is None else min(cores, limit))


def configure_torch_threads() -> int:
    """Leave one core to the GUI: torch gets ``cores - 1`` intra-op threads (at least 1).

    On a 2-core machine two busy torch threads fight the GUI thread for the cores, and
    torch's spinning workers then lose far more than a core's worth of throughput.
    ``PLAYGROUND_TORCH_THREADS`` overrides the choice.
    """
    import torch

    wanted = os.environ.get("PLAYGROUND_TORCH_THREADS")
    n = int(wanted) if wanted else max(1, usable_cores() - 1)
    torch.set_num_threads(n)
    return n
