"""How good the face model is: a Fréchet distance in the feature space of a face-parameter network.

FID (Heusel et al. 2017) compares the mean and covariance of Inception features of real
and generated images. Inception knows nothing of our cartoon faces and is not offline, so
the features here come from a small CNN the project trains to *predict the renderer's
parameters* from a face (head shape, skin tone, eye size, smile, hair, glasses, ...): its
penultimate layer has to see exactly what varies between faces. Then, as in FID,

    FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

between the features of rendered faces (r) and of generated ones (g). Lower is better; two
sets of rendered faces give the floor (sampling noise).

    python -m playground.ml.stylegan2.quality resources/stylegan2-faces-64.safetensors [snapshots...]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg


class FaceFeatures(nn.Module):
    """A small CNN: face (3, R, R) in [-1, 1] -> renderer parameters; ``features`` is its penultimate layer."""

    def __init__(self, n_params: int, resolution: int = 64, width: int = 32, n_features: int = 128) -> None:
        super().__init__()
        layers, ch, res = [], 3, resolution
        while res > 4:
            out = min(width * (resolution // res), 256)
            layers += [nn.Conv2d(ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1, stride=2), nn.BatchNorm2d(out), nn.ReLU()]
            ch, res = out, res // 2
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(ch, n_features), nn.ReLU())
        self.head = nn.Linear(n_features, n_params)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, R, R) -> (N, n_features)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_feature_net(images: np.ndarray, params: np.ndarray, epochs: int = 6, batch: int = 64,
                      seed: int = 0, device: str = "cpu") -> tuple[FaceFeatures, float]:
    """Fit the parameter regressor on rendered faces (uint8 NHWC); returns it and its held-out R^2."""
    torch.manual_seed(seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    y = torch.from_numpy(params.astype(np.float32))
    n_val = max(1, len(x) // 10)
    net = FaceFeatures(y.shape[1], x.shape[-1]).to(device)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x) - n_val, generator=gen) + n_val
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = F.mse_loss(net(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x[:n_val].to(device)).cpu()
    r2 = 1 - float(((pred - y[:n_val]) ** 2).sum() / ((y[:n_val] - y[:n_val].mean(0)) ** 2).sum())
    return net, r2


@torch.no_grad()
def features_of(net: FaceFeatures, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        out.append(net.features(x).double().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between two sets of feature rows, by the formula in the module docstring."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@torch.no_grad()
def generate(G, n: int, seed: int = 0, psi: float = 1.0, batch: int = 64) -> np.ndarray:
    from .train import to_uint8

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=gen)
        out.append(to_uint8(G(z, None, truncation_psi=psi, noise_mode="const")))
    return np.concatenate(out)


@dataclass
class QualityReport:
    floor: float  # FD between two independent sets of rendered faces
    scores: dict[str, float]  # model label -> FD to rendered faces
    r2: float  # the feature network's held-out R^2 on the renderer's parameters
    net: FaceFeatures | None = None


def evaluate(models: dict[str, object], resolution: int = 64, n: int = 2000, seed: int = 0) -> QualityReport:
    """FD of each generator (label -> Generator) against rendered faces, and the floor."""
    from .faces import FaceDataset

    train_set = FaceDataset(size=resolution, n=6000, seed=seed + 100)
    net, r2 = train_feature_net(train_set.images, train_set.params, seed=seed)
    ref = features_of(net, FaceDataset(size=resolution, n=n, seed=seed + 200).images)
    other = features_of(net, FaceDataset(size=resolution, n=n, seed=seed + 300).images)
    scores = {label: frechet_distance(ref, features_of(net, generate(G, n, seed=seed))) for label, G in models.items()}
    return QualityReport(frechet_distance(ref, other), scores, r2, net)


def save_feature_net(net: FaceFeatures, path, resolution: int, r2: float, command: str = "") -> None:
    """Ship the feature network (the projector's feature loss uses it): .safetensors + JSON of what made it."""
    from .. import checkpoints

    checkpoints.save_weights(path, dict(net.state_dict()), {
        "kind": "face-features", "resolution": resolution, "n_params": net.head.out_features,
        "n_features": net.head.in_features, "width": 32, "heldout_r2": round(r2, 4), "command": command,
        "made_by": "playground.ml.stylegan2.quality.train_feature_net", "seed": 0,
        "training_data": "6000 procedural faces (playground.ml.stylegan2.faces, seed 100)"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m playground.ml.stylegan2.quality", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="generator files (.safetensors + .json, or official pickles)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-features", default="", help="also keep the feature network here (.safetensors)")
    args = p.parse_args(argv)
    from .pickles import load_generator

    models = {path: load_generator(path) for path in args.models}
    resolution = next(iter(models.values())).img_resolution
    report = evaluate(models, resolution, args.n, args.seed)
    print(f"feature network: held-out R^2 {report.r2:.3f} on the renderer's parameters")
    print(f"floor (rendered vs rendered): FD {report.floor:.2f}")
    for label, score in report.scores.items():
        print(f"{label}: FD {score:.2f}")
    if args.save_features:
        command = "python -m playground.ml.stylegan2.quality " + " ".join(argv if argv is not None else sys.argv[1:])
        save_feature_net(report.net, args.save_features, resolution, report.r2, command)
        print(f"feature network saved to {args.save_features}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
