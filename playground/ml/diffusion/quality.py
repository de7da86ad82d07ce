"""The digits default's quality bar: does a guided sample look like the digit that was asked for?

A small convolutional classifier is trained on the real digits (the same 16x16 images and the
same split the DDPM's trainer uses, :func:`.train.digits_data`), its accuracy measured on the
held-out digits the DDPM never saw, and then it labels samples drawn with classifier-free
guidance for each class. The figure is the fraction labelled as the class that was asked for.

    classifier, accuracy = train_classifier(seed=0)
    report = guided_accuracy(model, classifier, per_class=20, guidance=3.0)

Everything here is deterministic for a seed; nothing needs Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import models, samplers, sampling


class DigitsClassifier(nn.Module):
    """[B, 1, 16, 16] in [-1, 1] -> [B, 10] logits: two conv blocks and a linear head (~30 k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # [B, 32, 8, 8]
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # [B, 64, 4, 4]
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (the DDPM's samples are not always centred like the data)."""
    dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_classifier(seed: int = 0, epochs: int = 30, hold_out: float = 0.1,
                     data=None) -> tuple[DigitsClassifier, float]:
    """Train on the DDPM's training digits; return the classifier and its held-out accuracy.

    ``data`` = (x_train, y_train, x_test, y_test) replaces the digits (tests)."""
    if data is None:
        from .train import digits_data

        data = digits_data(seed, hold_out)
    x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in data)
    x_train, x_test = x_train.float(), x_test.float()
    y_train, y_test = y_train.long(), y_test.long()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(net(_augment(x_train[idx], g)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return net, accuracy(net, x_test, y_test)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).float().mean()) if len(y) else float("nan")


@dataclass
class GuidedReport:
    per_class: np.ndarray     # [10] fraction of each class's samples labelled as asked
    overall: float
    confusion: np.ndarray     # [10, 10] asked (rows) x labelled (columns) counts
    samples: np.ndarray       # [10 * n, 1, H, W] the samples, in [-1, 1]


@torch.no_grad()
def guided_accuracy(model: models.DiffusionModel, classifier: nn.Module, *, per_class: int = 20,
                    guidance: float = 3.0, sampler: str = "ddim", steps: int = 50, seed: int = 0,
                    classes: int = 10) -> GuidedReport:
    """Sample ``per_class`` images of each class with guidance and label them with ``classifier``."""
    if not model.conditional:
        raise ValueError("the guided-accuracy figure needs a class-conditional model")
    images, asked = [], []
    for c in range(classes):
        scheduler = samplers.make_scheduler(sampler, model.scheduler_config)
        final = sampling.final_sample(model.unet, scheduler, steps=steps, batch=per_class, seed=seed + c,
                                      class_labels=c, guidance_scale=guidance)
        images.append(final.clamp(-1, 1))
        asked += [c] * per_class
    x = torch.cat(images)
    if x.shape[-1] != 16:  # the classifier reads 16x16
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    labelled = classifier(x).argmax(1).numpy()
    asked_arr = np.asarray(asked)
    confusion = np.zeros((classes, 10), dtype=np.int64)
    np.add.at(confusion, (asked_arr, labelled), 1)
    per = np.array([np.mean(labelled[asked_arr == c] == c) for c in range(classes)])
    return GuidedReport(per, float(np.mean(labelled == asked_arr)), confusion, x.numpy())
