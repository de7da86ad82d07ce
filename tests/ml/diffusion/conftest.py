"""Tiny random UNet2DModels (a few tens of thousands of parameters) for the diffusion tests."""

from __future__ import annotations

import diffusers  # noqa: F401 - imported once at collection (seconds), not inside the first test's time
import pytest
import torch

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
            norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"))


def make_tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY, **overrides}).eval()


@pytest.fixture
def make_unet():
    """make_unet(seed=0, **config overrides): a tiny UNet2DModel in eval mode."""
    return make_tiny_unet


@pytest.fixture
def tiny_unet():
    return make_tiny_unet()


@pytest.fixture
def conditional_unet():
    """Three classes plus the null class (num_class_embeds = 4), with class embeddings big enough to matter."""
    unet = make_tiny_unet(1, num_class_embeds=4)
    with torch.no_grad():
        unet.class_embedding.weight.mul_(3.0)
    return unet
