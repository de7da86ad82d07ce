"""The shared pieces of the headless training scripts."""

import argparse
from dataclasses import dataclass

import pytest
import torch

from playground.ml.training import runs, script


@dataclass
class Cfg:
    lr: float = 0.1
    steps: int = 3
    name: str = "a"


def test_a_config_becomes_flags_and_back():
    p = argparse.ArgumentParser()
    script.add_config_arguments(p, Cfg())
    assert script.config_from_arguments(Cfg, p.parse_args(["--lr", "0.5", "--steps", "7"])) == Cfg(0.5, 7, "a")


def test_the_state_is_replaced_whole(tmp_path):
    path = tmp_path / "sub" / "state.pt"
    script.save_state(path, {"step": 1, "w": torch.ones(2)})
    script.save_state(path, {"step": 2, "w": torch.zeros(2)})
    assert torch.load(path, weights_only=True)["step"] == 2 and not path.with_suffix(".tmp").exists()


def test_the_status_a_run_ends_with():
    assert script.ended_status(runs.FINISHED) == runs.FINISHED
    assert script.ended_status(runs.RUNNING) == runs.STOPPED  # no exception: stopped
    with pytest.raises(ValueError):
        try:
            raise ValueError("boom")
        finally:
            assert script.ended_status(runs.RUNNING) == runs.FAILED
