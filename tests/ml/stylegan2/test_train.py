"""The face-GAN trainer (a tiny run end to end, its pieces) and the Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.ml.stylegan2 import quality
from playground.ml.stylegan2.pickles import load_generator
from playground.ml.stylegan2.train import FaceGANConfig, GANPreview, GANStep, build_networks, r1_penalty, train
from playground.ml.training.runs import RunStore

TINY = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, batch=4,
            dataset_size=32, kimg=0.04, tick_kimg=0.02, snapshot_kimg=0.02)


def drain(gen):
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        return items, stop.value


def test_a_tiny_run_trains_writes_its_run_files_and_a_loadable_generator(tmp_path):
    store = RunStore(tmp_path / "runs")
    out = tmp_path / "faces.safetensors"
    items, result = drain(train(FaceGANConfig(**TINY), store, out, command="test"))
    steps = [i for i in items if isinstance(i, GANStep)]
    assert result["status"] == "finished" and len(steps) == 10  # 40 images in batches of 4
    assert all(np.isfinite([s.g_loss, s.d_loss]).all() for s in steps)
    assert any(isinstance(i, GANPreview) and i.grid.dtype == np.uint8 for i in items)
    run = store.list_runs()[0]
    assert run.status == "finished" and run.model == "stylegan2-16"
    metrics = store.metrics(run.id)
    assert sum(m["kind"] == "step" for m in metrics) == 10 and any(m["kind"] == "epoch" for m in metrics)
    assert list((run.path / "snapshots").glob("*.safetensors")) and (run.path / "state.pt").exists()
    G = load_generator(out)
    assert G.img_resolution == 16
    ref = result["G_ema"]
    z = torch.randn(2, 16)
    assert torch.allclose(G(z, None), ref(z, None), atol=1e-6)


def test_a_run_resumes_from_its_state(tmp_path):
    store = RunStore(tmp_path / "runs")
    drain(train(FaceGANConfig(**TINY), store))
    state = store.list_runs()[0].path / "state.pt"
    items, result = drain(train(FaceGANConfig(**{**TINY, "kimg": 0.06}), None, resume=state))
    steps = [i for i in items if isinstance(i, GANStep)]
    assert steps[0].step == 11 and result["steps"] == 15


def test_stopping_a_run_keeps_the_generator(tmp_path):
    out = tmp_path / "g.safetensors"
    gen = train(FaceGANConfig(**{**TINY, "kimg": 10}), None, out)
    for item in gen:
        if isinstance(item, GANStep) and item.step == 3:
            break
    gen.close()
    assert load_generator(out).img_resolution == 16


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="resolution"):
        drain(train(FaceGANConfig(**{**TINY, "resolution": 20})))


def test_r1_is_the_squared_gradient_norm():
    cfg = FaceGANConfig(**TINY)
    _, D, _ = build_networks(cfg, torch.device("cpu"))
    x = torch.randn(4, 3, 16, 16)
    penalty = r1_penalty(D, x)
    x2 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x2, None).sum(), x2)
    assert torch.allclose(penalty, g.square().sum(dim=[1, 2, 3]), rtol=1e-5, atol=1e-8)


def test_frechet_distance_follows_its_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([1.0, 2.0, 0.0])  # same covariance: FD = |shift|^2
    assert quality.frechet_distance(a, shifted) == pytest.approx(5.0, rel=1e-6)
    wide = a * 2.0  # cov 4I against I: Tr(I + 4I - 2 * 2I) = 1 per dimension
    assert quality.frechet_distance(a, wide) == pytest.approx(3.0, rel=0.1)
