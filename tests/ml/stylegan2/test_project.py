"""Projecting a picture into W+: the reconstruction gets close to a picture the model can make."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.errors import UserError
from playground.ml.stylegan2.model import Generator
from playground.ml.stylegan2.project import ProjectionStep, load_picture, picture_to_tensor, project
from playground.ml.stylegan2.train import to_uint8


def tiny() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                     channel_max=32, mapping_kwargs={"num_layers": 2}).eval()


def run(gen):
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        return items, stop.value


def test_projection_reconstructs_a_picture_of_the_model():
    G = tiny()
    with torch.no_grad():
        target = to_uint8(G(torch.randn(1, 16, generator=torch.Generator().manual_seed(3)), None))[0]
    items, ws = run(project(G, target, steps=150, preview_every=50, feature_net=None))
    steps = [i for i in items if isinstance(i, ProjectionStep)]
    assert len(steps) == 150 and ws.shape == (1, G.num_ws, 16)
    assert steps[-1].pixel_loss < 0.3 * steps[0].pixel_loss
    assert sum(s.image is not None for s in steps) == 3
    with torch.no_grad():
        got = to_uint8(G.synthesis(ws, noise_mode="const"))[0].astype(float)
        others = to_uint8(G(torch.randn(8, 16, generator=torch.Generator().manual_seed(9)), None)).astype(float)
    # Closer to the target than other pictures of the model are.
    assert np.abs(got - target).mean() < 0.5 * np.abs(others - target).mean()

def test_pictures_are_cropped_and_resized_and_bad_ones_refused(tmp_path):
    x = picture_to_tensor(np.zeros((30, 50, 4), np.uint8), 16)
    assert x.shape == (1, 3, 16, 16) and float(x.min()) == -1.0
    with pytest.raises(UserError):
        picture_to_tensor(np.zeros((8, 8, 3), np.float32), 16)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a picture")
    with pytest.raises(UserError, match="not a picture"):
        load_picture(bad)


def test_the_shipped_feature_network_format_round_trips(tmp_path, monkeypatch):
    from playground.ml.stylegan2 import project as proj
    from playground.ml.stylegan2.quality import FaceFeatures, save_feature_net

    net = FaceFeatures(5, 16).eval()
    path = tmp_path / "ff.safetensors"
    save_feature_net(net, path, 16, 0.5)
    monkeypatch.setattr(proj, "FEATURES_FILE", path)
    back = proj.load_feature_net(16)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(back.features(x), net.features(x))
    assert proj.load_feature_net(32) is None  # made for another resolution: not used
    G = tiny()
    items, _ = run(project(G, np.zeros((16, 16, 3), np.uint8), steps=3, feature_net=back))
    assert all(np.isfinite(i.feature_loss) for i in items if isinstance(i, ProjectionStep))
