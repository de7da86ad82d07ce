"""Tests of the model zoo: every model on every input shape it claims to fit, the catalogue,
the errors, the first-layer filters, and that the MNIST-1D CNN actually learns."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from playground.ml.training.models import (
    MODELS,
    build_model,
    first_layer_filters,
    models_for,
)

DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
PHOTOS = (3, 64, 64)
ODD_IMAGES = (1, 20, 30)
MNIST1D = (40,)
SHAPES = [DIGITS, MNIST, CIFAR, PHOTOS, ODD_IMAGES, MNIST1D]

IMAGE_NAMES = ["softmax", "mlp", "lenet", "vgg", "nin", "resnet"]
SEQUENCE_NAMES = ["softmax", "mlp", "cnn1d", "gru"]

CASES = [(name, shape) for shape in SHAPES for name in models_for(shape)]


def _id(case):
    name, shape = case
    return f"{name}-{'x'.join(map(str, shape))}"


# -----------------------------------------------------------------------------
# Every model on every shape it fits

@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_logits_loss_and_gradients(case):
    name, shape = case
    num_classes = 7
    torch.manual_seed(0)
    model = build_model(name, shape, num_classes, dropout=0.3)
    model.train()
    x = torch.randn(3, *shape)
    y = torch.tensor([0, 3, 6])

    logits = model(x)
    assert logits.shape == (3, num_classes)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()

    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "missing or bad grads"
    assert sum(float(g.abs().sum()) for g in grads) > 0, "all gradients are zero"

    # A batch of one, in training mode, happens as the last batch of an epoch.
    assert model(torch.randn(1, *shape)).shape == (1, num_classes)
    # Evaluation mode gives the same shape and is deterministic (dropout off).
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", list(MODELS))
def test_models_are_deterministic_given_the_seed(name):
    shape = MNIST1D if name in ("cnn1d", "gru") else DIGITS
    torch.manual_seed(123)
    a = build_model(name, shape, 10).state_dict()
    torch.manual_seed(123)
    b = build_model(name, shape, 10).state_dict()
    torch.manual_seed(124)
    c = build_model(name, shape, 10).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_softmax_and_mlp_flatten_any_input():
    for shape in [(5,), (2, 3), (3, 4, 5), (2, 2, 2, 2)]:
        for name in ("softmax", "mlp"):
            assert build_model(name, shape, 4)(torch.randn(2, *shape)).shape == (2, 4)


# -----------------------------------------------------------------------------
# The catalogue and the errors

def test_models_for():
    for shape in (DIGITS, MNIST, CIFAR, PHOTOS, ODD_IMAGES):
        assert models_for(shape) == IMAGE_NAMES
    assert models_for(MNIST1D) == SEQUENCE_NAMES
    assert models_for((100,)) == SEQUENCE_NAMES
    assert models_for((4, 5)) == ["softmax", "mlp"]
    assert models_for([1, 28, 28]) == IMAGE_NAMES  # a list works like a tuple


def test_catalogue():
    assert set(MODELS) == set(IMAGE_NAMES) | set(SEQUENCE_NAMES)
    assert MODELS["lenet"] == "LeNet-5"
    assert all(isinstance(label, str) and label for label in MODELS.values())


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="Unknown model 'alexnet'"):
        build_model("alexnet", MNIST, 10)


@pytest.mark.parametrize("name", ["lenet", "vgg", "nin", "resnet"])
def test_image_model_on_sequences_raises(name):
    with pytest.raises(ValueError, match="needs images") as info:
        build_model(name, MNIST1D, 10)
    assert "sequences of length 40" in str(info.value)
    assert MODELS[name] in str(info.value)


@pytest.mark.parametrize("name", ["cnn1d", "gru"])
def test_sequence_model_on_images_raises(name):
    with pytest.raises(ValueError, match="needs 1-D sequences") as info:
        build_model(name, MNIST, 10)
    assert "28x28 images" in str(info.value)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        build_model("mlp", (), 10)
    with pytest.raises(ValueError):
        build_model("mlp", (0, 5), 10)
    with pytest.raises(ValueError):
        build_model("mlp", MNIST, 0)
    with pytest.raises(ValueError):
        build_model("mlp", MNIST, 10, dropout=1.0)


# -----------------------------------------------------------------------------
# Architectures: what the docstrings promise

def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_mnist1d_baselines_match_the_papers_parameter_counts():
    # Counts printed by the MNIST-1D benchmark (ConvBase 5,210; GRUBase 5,134).
    assert _count(build_model("cnn1d", MNIST1D, 10)) == 5210
    assert _count(build_model("gru", MNIST1D, 10)) == 5134
    gru = build_model("gru", MNIST1D, 10).gru
    assert gru.bidirectional and gru.hidden_size == 6 and gru.input_size == 1


def test_lenet_on_28x28_is_d2ls_lenet():
    model = build_model("lenet", MNIST, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (6, (5, 5), (2, 2)), (16, (5, 5), (0, 0))]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    assert _count(model) == 61706


def test_lenet_skips_pools_on_tiny_images():
    model = build_model("lenet", DIGITS, 10)
    # 8x8 -> pool -> 4x4 -> padded conv keeps 4x4 -> pool -> 2x2: 16 * 2 * 2 features.
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][0].in_features == 64


def test_mlp_layout():
    model = build_model("mlp", MNIST, 10, dropout=0.25)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 256), (256, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]


def test_vgg_uses_3x3_convs_and_dropout():
    model = build_model("vgg", CIFAR, 10, dropout=0.4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.kernel_size == (3, 3) for c in convs)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.4, 0.4]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3


def test_nin_has_no_fully_connected_layer():
    model = build_model("nin", CIFAR, 10)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels == 10


def test_resnet_has_a_small_image_stem():
    from torchvision.models.resnet import ResNet

    model = build_model("resnet", ODD_IMAGES, 10)
    assert isinstance(model, ResNet)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [1] * 4
    # 8x8 digits: halving stops at 2x2, so the last stage keeps stride 1.
    digits = build_model("resnet", DIGITS, 10)
    assert digits.layer3[0].conv1.stride == (2, 2)
    assert digits.layer4[0].conv1.stride == (1, 1)
    assert digits.layer4[0].downsample[0].stride == (1, 1)


# -----------------------------------------------------------------------------
# First-layer filters

@pytest.mark.parametrize("name, shape, expected", [
    ("lenet", MNIST, (6, 5, 5)),
    ("lenet", CIFAR, (6, 5, 5, 3)),
    ("vgg", ODD_IMAGES, (32, 3, 3)),
    ("vgg", PHOTOS, (32, 3, 3, 3)),
    ("nin", DIGITS, (64, 5, 5)),
    ("resnet", CIFAR, (64, 3, 3, 3)),
    ("resnet", MNIST, (64, 3, 3)),
    ("cnn1d", MNIST1D, (25, 1, 5)),
])
def test_first_layer_filter_shapes(name, shape, expected):
    filters = first_layer_filters(build_model(name, shape, 10))
    assert isinstance(filters, np.ndarray)
    assert filters.shape == expected
    assert filters.dtype == np.float32
    assert np.isfinite(filters).all()


@pytest.mark.parametrize("name, shape", [("softmax", MNIST), ("mlp", CIFAR), ("gru", MNIST1D),
                                         ("softmax", MNIST1D)])
def test_no_filters_without_a_conv(name, shape):
    assert first_layer_filters(build_model(name, shape, 10)) is None


def test_filter_values():
    # RGB filters are the weights with the channel last; others are averaged over channels.
    rgb = build_model("vgg", CIFAR, 10)
    w = rgb[0].weight.detach()
    assert np.allclose(first_layer_filters(rgb), w.permute(0, 2, 3, 1).numpy())
    two_channels = build_model("lenet", (2, 28, 28), 10)
    w = two_channels[0].weight.detach()
    assert np.allclose(first_layer_filters(two_channels), w.mean(1).numpy())
    cnn = build_model("cnn1d", MNIST1D, 10)
    assert np.allclose(first_layer_filters(cnn)[:, 0], cnn.conv1.weight.detach()[:, 0].numpy())
    # A copy: changing it leaves the model alone.
    first_layer_filters(cnn)[:] = 0
    assert cnn.conv1.weight.abs().sum() > 0


# -----------------------------------------------------------------------------
# Learning

def _bump_task(n: int, length: int = 40, seed: int = 0):
    """Three classes of noisy 1-D signals: a narrow bump, a wide bump, a step, placed at
    random positions, so the class lies in the shape and not in the position."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    y = torch.randint(0, 3, (n,), generator=g)
    centre = torch.randint(8, length - 8, (n, 1), generator=g).float()
    narrow = torch.exp(-0.5 * ((t - centre) / 1.0) ** 2)
    wide = torch.exp(-0.5 * ((t - centre) / 4.0) ** 2)
    step = (t >= centre).float()
    signal = torch.stack([narrow, wide, step], dim=1)[torch.arange(n), y]
    return signal + 0.1 * torch.randn(n, length, generator=g), y


def test_cnn1d_learns_a_small_1d_task():
    x, y = _bump_task(256)
    torch.manual_seed(0)
    model = build_model("cnn1d", (40,), 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # the MNIST-1D paper's rate
    losses = []
    for step in range(60):
        idx = torch.arange(step * 32, (step + 1) * 32) % len(x)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    x_new, y_new = _bump_task(200, seed=1)
    with torch.no_grad():
        accuracy = float((model(x_new).argmax(1) == y_new).float().mean())
    assert accuracy > 0.8  # chance is 1/3
