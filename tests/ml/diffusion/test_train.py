"""The DDPM training script: the digits data, label dropping for guidance, a short run that lowers
its loss and writes its run files, weights and state, and a resumed run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from playground.ml.diffusion import models
from playground.ml.diffusion import train as dtrain


def test_the_digits_are_16x16_in_minus_1_to_1_with_a_held_out_part():
    x, y, xt, yt = dtrain.digits_data(seed=0, hold_out=0.1)
    assert x.shape[1:] == (1, 16, 16) and xt.shape[1:] == (1, 16, 16)
    assert len(x) + len(xt) == 1797 and abs(len(xt) - 180) <= 1
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6 and x.min() < -0.99 and x.max() > 0.9
    assert set(np.unique(y)) == set(range(10))
    x2, _, _, _ = dtrain.digits_data(seed=0, hold_out=0.1)
    np.testing.assert_array_equal(x, x2)


def test_labels_are_dropped_to_the_null_class_for_guidance(make_unet, monkeypatch):
    unet = make_unet(0, num_class_embeds=4)
    seen = []
    forward = unet.forward

    def spy(x, t, class_labels=None, **kw):
        if unet.training:
            seen.append(class_labels.clone())
        return forward(x, t, class_labels=class_labels, **kw)

    monkeypatch.setattr(unet, "forward", spy)
    x = torch.rand(40, 1, 8, 8) * 2 - 1
    y = torch.arange(40) % 3
    cfg = dtrain.TrainConfig(batch=40, max_steps=10, minutes=5, drop_label=0.5, check_every=1000)
    list(dtrain.train(cfg, None, None, None, unet=unet, data=(x, y)))
    labels = torch.cat(seen)
    null = models.null_label(unet)
    share = float((labels == null).float().mean())
    assert null == 3 and 0.35 < share < 0.65  # about half become the null class
    assert set(labels.tolist()) <= {0, 1, 2, 3}


def test_a_short_run_learns_and_writes_its_run_weights_and_state(make_unet, tmp_path):
    from playground.ml.training.runs import RunStore

    unet = make_unet(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 8, 8, generator=g) > 0.5).float() * 2 - 1
    cfg = dtrain.TrainConfig(batch=32, max_steps=40, minutes=5, check_every=20, lr=2e-3)
    store = RunStore(tmp_path / "runs")
    out, state = tmp_path / "ddpm.safetensors", tmp_path / "state.pt"
    items = list_until_done(dtrain.train(cfg, store, out, state, command="test", unet=unet, data=(x, None)))
    steps = [i for i in items if isinstance(i, dtrain.DiffusionStep)]
    assert len(steps) == 40
    assert np.mean([s.loss for s in steps[-10:]]) < np.mean([s.loss for s in steps[:10]])
    loaded = models.read_unet_file(out)
    assert not loaded.conditional and loaded.resolution == (8, 8)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["made_by"] == "playground.ml.diffusion.train" and side["steps"] == 40
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].status == "finished" and runs[0].epochs_done == 2
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == 40
    cfg2 = dtrain.TrainConfig(**{**cfg.__dict__, "max_steps": 45})
    more = [i for i in list_until_done(dtrain.train(cfg2, None, None, state, unet=make_unet(0), data=(x, None)))
            if isinstance(i, dtrain.DiffusionStep)]
    assert [s.step for s in more] == [41, 42, 43, 44, 45]


def list_until_done(gen):
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration:
        return items


def test_an_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="digits or faces"):
        next(dtrain.train(dtrain.TrainConfig(dataset="cifar"), None, None, None))
