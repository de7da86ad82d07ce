"""The quality figure's pieces: a classifier that learns the digits, and the guided-sample tally."""

import numpy as np
import torch

from playground.ml.diffusion import models, quality


def _toy_data(n=200, seed=0):
    """Two kinds of 16x16 picture: a bright left half (class 0) or a bright right half (class 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.full((n, 1, 16, 16), -1.0, dtype=np.float32)
    for i, c in enumerate(y):
        if c == 0:
            x[i, 0, :, :8] = 1.0
        else:
            x[i, 0, :, 8:] = 1.0
    x += rng.normal(0, 0.3, x.shape).astype(np.float32)
    return x, y


def test_the_classifier_learns_what_it_is_shown_and_its_held_out_accuracy_is_measured():
    x, y = _toy_data()
    net, acc = quality.train_classifier(seed=0, epochs=3, data=(x[:150], y[:150], x[150:], y[150:]))
    assert acc > 0.95
    # the accuracy is measured, not assumed: labels swapped give the opposite figure
    assert quality.accuracy(net, torch.as_tensor(x[150:]), torch.as_tensor(1 - y[150:])) < 0.05


def test_guided_accuracy_tallies_what_the_classifier_says_for_each_class_asked():
    torch.manual_seed(0)
    unet = models.digits_unet(0, block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=8,
                              sample_size=8, num_class_embeds=4).eval()
    model = models.DiffusionModel(unet)

    class Fixed(torch.nn.Module):  # labels every picture as class 2
        def forward(self, x):
            out = torch.zeros(len(x), 10)
            out[:, 2] = 1
            return out

    report = quality.guided_accuracy(model, Fixed(), per_class=3, steps=2, classes=3)
    assert report.samples.shape == (9, 1, 16, 16)
    np.testing.assert_array_equal(report.per_class, [0.0, 0.0, 1.0])
    assert abs(report.overall - 1 / 3) < 1e-9
    assert report.confusion[:, 2].tolist() == [3, 3, 3] and report.confusion.sum() == 9
