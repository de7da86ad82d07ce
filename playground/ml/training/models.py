"""The model zoo of the training dashboard: the classic networks of the d2l course and the
MNIST-1D baselines, each fitted automatically to the input shape and the number of classes.

Two kinds of input exist:

* images, ``input_shape == (C, H, W)``, batches ``(B, C, H, W)``: anything from 8x8 digits to
  64x64 photos. Convolutional models pool only while the feature map stays at least 2x2,
  and their linear layers are sized by a dummy forward pass, so none breaks on small images;
* sequences, ``input_shape == (L,)``, batches ``(B, L)``: MNIST-1D (L = 40).

Softmax regression and the MLP flatten their input, so they fit every shape.

The models (``MODELS`` maps each name to the label shown in the app):

==========  ======================================================================
softmax     Softmax regression: flatten, one linear layer.
mlp         Flatten, two hidden layers of 256 units with ReLU and dropout (d2l).
lenet       LeNet-5 as in d2l: 5x5 convs (the first padded by 2), sigmoid activations,
            2x2 average pooling, dense 120-84-classes, Xavier-uniform initialisation.
vgg         A small VGG: blocks of 3x3 convs + ReLU, each followed by 2x2 max pooling,
            then a dense head 256-256-classes with dropout.
nin         Network in Network: NiN blocks (a kxk conv followed by two 1x1 convs),
            3x3/2 max pooling, dropout, a last NiN block with one channel per class and
            global average pooling. No fully connected layer.
resnet      ResNet-10: torchvision's ResNet with one BasicBlock per stage ([1, 1, 1, 1]),
            its stem changed for small images (3x3 stride-1 conv, no max pool).
cnn1d       The MNIST-1D paper's CNN: three strided 1-D convs of 25 channels + a linear layer.
gru         The MNIST-1D paper's GRU: a bidirectional GRU with 6 hidden units per direction
            whose outputs at every time step feed one linear layer.
==========  ======================================================================

The public functions are :func:`build_model`, :func:`models_for` and
:func:`first_layer_filters`. Building a model uses only torch's global random generator,
so ``torch.manual_seed(s)`` followed by :func:`build_model` always gives the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet

# -----------------------------------------------------------------------------
# The catalogue

MODELS: dict[str, str] = {
    "softmax": "Softmax regression",
    "mlp": "MLP (2x256, dropout)",
    "lenet": "LeNet-5",
    "vgg": "VGG (small)",
    "nin": "Network in Network",
    "resnet": "ResNet-10",
    "cnn1d": "1-D CNN (MNIST-1D)",
    "gru": "GRU (MNIST-1D)",
}

ANY_INPUT_MODELS = ("softmax", "mlp")  # flatten whatever comes in
IMAGE_MODELS = ("lenet", "vgg", "nin", "resnet")  # need (C, H, W)
SEQUENCE_MODELS = ("cnn1d", "gru")  # need (L,)


def _is_image(input_shape: tuple[int, ...]) -> bool:
    return len(input_shape) == 3


def _is_sequence(input_shape: tuple[int, ...]) -> bool:
    return len(input_shape) == 1


def _describe(input_shape: tuple[int, ...]) -> str:
    """Human words for an input shape, for error messages."""
    if _is_image(input_shape):
        c, h, w = input_shape
        return f"{h}x{w} images with {c} channel{'s' if c != 1 else ''}"
    if _is_sequence(input_shape):
        return f"sequences of length {input_shape[0]}"
    return f"inputs of shape {tuple(input_shape)}"


def models_for(input_shape: tuple[int, ...]) -> list[str]:
    """The names of the models that fit inputs of this shape (without the batch dimension)."""
    input_shape = tuple(input_shape)
    if _is_image(input_shape):
        return [*ANY_INPUT_MODELS, *IMAGE_MODELS]
    if _is_sequence(input_shape):
        return [*ANY_INPUT_MODELS, *SEQUENCE_MODELS]
    return list(ANY_INPUT_MODELS)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                dropout: float = 0.5) -> nn.Module:
    """A freshly initialised model ``name`` for inputs of ``input_shape`` and ``num_classes``.

    The model maps a batch ``(B, *input_shape)`` to logits ``(B, num_classes)``.
    ``dropout`` is the drop probability of the models that have dropout (mlp, vgg, nin);
    the others ignore it. Raises ``ValueError`` for an unknown name, a model that does not
    fit the kind of input, or a nonsensical shape or class count.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; the models are: {', '.join(MODELS)}.")
    if not input_shape or any(d < 1 for d in input_shape):
        raise ValueError(f"The input shape {input_shape} must have at least one dimension, "
                         f"all of them positive.")
    if num_classes < 1:
        raise ValueError(f"A classifier needs at least one class (got {num_classes}).")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"The dropout probability must be at least 0 and below 1 (got {dropout}).")
    if name not in models_for(input_shape):
        needs = "images (channels, height, width)" if name in IMAGE_MODELS else "1-D sequences"
        fitting = ", ".join(MODELS[m] for m in models_for(input_shape))
        raise ValueError(f"{MODELS[name]} needs {needs}, but the data are "
                         f"{_describe(input_shape)}. Models that fit: {fitting}.")
    builders = {
        "softmax": _softmax_regression,
        "mlp": _mlp,
        "lenet": _lenet,
        "vgg": _vgg,
        "nin": _nin,
        "resnet": _resnet,
        "cnn1d": _cnn1d,
        "gru": _gru,
    }
    return builders[name](input_shape, num_classes, dropout)


# -----------------------------------------------------------------------------
# Helpers shared by the image models

def _room_to_halve(h: int, w: int) -> bool:
    """Whether a 2x down-sampling still leaves a feature map of at least 2x2."""
    return min(h, w) >= 4


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features per example that ``features`` produces, found by a dummy pass.

    The dummy input is zeros and ``features`` holds no dropout, so this draws no random
    numbers and leaves the seeded initialisation of the layers that follow unchanged.
    """
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


# -----------------------------------------------------------------------------
# Models for any input

def _softmax_regression(input_shape, num_classes, dropout) -> nn.Module:
    """Flatten and one linear layer; softmax is left to the cross-entropy loss."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def _mlp(input_shape, num_classes, dropout) -> nn.Module:
    """The d2l multilayer perceptron: two hidden layers of 256 with ReLU and dropout."""
    hidden = 256
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


# -----------------------------------------------------------------------------
# Image models

def _lenet(input_shape, num_classes, dropout) -> nn.Module:
    """LeNet-5 in its d2l form: sigmoid activations and average pooling (not ReLU/max).

    On 28x28 inputs it is exactly d2l's network (6@28x28 -> 6@14x14 -> 16@10x10 ->
    16@5x5 -> 120 -> 84 -> classes). On smaller images the second conv is padded when the
    map is under 5 pixels, and a pool is skipped when it would leave less than 2x2.
    Weights are Xavier-uniform, as d2l initialises it; that keeps the sigmoids out of
    saturation so the network trains with the usual optimisers.
    """
    channels, h, w = input_shape
    layers: list[nn.Module] = [nn.Conv2d(channels, 6, kernel_size=5, padding=2), nn.Sigmoid()]
    if _room_to_halve(h, w):
        layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
        h, w = h // 2, w // 2
    pad = 0 if min(h, w) >= 5 else 2  # a 5x5 conv needs 5 pixels; pad 2 keeps the size
    layers += [nn.Conv2d(6, 16, kernel_size=5, padding=pad), nn.Sigmoid()]
    h, w = h + 2 * pad - 4, w + 2 * pad - 4
    if _room_to_halve(h, w):
        layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
    layers.append(nn.Flatten())
    features = nn.Sequential(*layers)

    model = nn.Sequential(
        *features,
        nn.Linear(_flat_size(features, input_shape), 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
    return model


def _vgg(input_shape, num_classes, dropout) -> nn.Module:
    """A small VGG: three blocks of 3x3 convs (1x32, 1x64, 2x128), each closed by a 2x2
    max pool while the map allows, then a dense head 256-256-classes with dropout.

    The blocks follow VGG's rule (3x3 convs with padding 1 keep the size, pooling halves
    it, channels double); widths and the head are scaled down from VGG-11's 64..512
    channels and 4096-unit layers to suit 8x8 to 64x64 images.
    """
    blocks = ((1, 32), (1, 64), (2, 128))  # (number of convs, output channels)
    in_channels, h, w = input_shape
    layers: list[nn.Module] = []
    for num_convs, out_channels in blocks:
        for _ in range(num_convs):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = out_channels
        if _room_to_halve(h, w):
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            h, w = h // 2, w // 2
    layers.append(nn.Flatten())
    features = nn.Sequential(*layers)

    hidden = 256
    return nn.Sequential(
        *features,
        nn.Linear(_flat_size(features, input_shape), hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _nin_block(in_channels: int, out_channels: int, kernel_size: int,
               last_relu: bool = True) -> list[nn.Module]:
    """A NiN block: a kxk conv (size-preserving padding) and two 1x1 convs, all with ReLU.

    The 1x1 convs act as a small MLP applied at every pixel. ``last_relu=False`` drops the
    final ReLU, used for the block that outputs the class scores.
    """
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
    ]
    return layers + [nn.ReLU()] if last_relu else layers


def _nin(input_shape, num_classes, dropout) -> nn.Module:
    """Network in Network (Lin et al. 2013) in d2l's layout, scaled for small images.

    NiN blocks of 64 (5x5), 128 (3x3) and 256 (3x3) channels, each followed by a 3x3
    stride-2 max pool while the map allows; dropout; a last NiN block with one channel per
    class; global average pooling turns each class map into its logit. One change from
    d2l: the very last 1x1 conv has no ReLU, so logits can be negative.
    """
    in_channels, h, w = input_shape
    layers: list[nn.Module] = []
    for out_channels, kernel_size in ((64, 5), (128, 3), (256, 3)):
        layers += _nin_block(in_channels, out_channels, kernel_size)
        in_channels = out_channels
        if _room_to_halve(h, w):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))  # halves, rounding up
            h, w = (h + 1) // 2, (w + 1) // 2
    layers.append(nn.Dropout(dropout))
    layers += _nin_block(in_channels, num_classes, kernel_size=3, last_relu=False)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _resnet(input_shape, num_classes, dropout) -> nn.Module:
    """ResNet-10 from torchvision's own classes, with a stem for small images.

    ``ResNet(BasicBlock, [1, 1, 1, 1])`` is ResNet-18 with one residual block per stage
    instead of two (1 stem conv + 4 blocks x 2 convs + the final linear layer = 10 layers).
    The ImageNet stem (7x7 stride-2 conv, then a stride-2 max pool) would shrink an 8x8
    image to 2x2 before any block; it becomes a 3x3 stride-1 conv reading the input's
    channels, with no max pool (as in the usual CIFAR ResNets). A stage keeps stride 1
    instead of 2 where halving would leave less than 2x2, so batch norm always sees more
    than one value per channel, even for a batch of one.
    """
    in_channels, h, w = input_shape
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    model.maxpool = nn.Identity()
    for stage in (model.layer2, model.layer3, model.layer4):
        first_block = stage[0]  # the block that down-samples, in conv1 and its shortcut
        if _room_to_halve(h, w):
            h, w = (h + 1) // 2, (w + 1) // 2
        else:
            first_block.conv1.stride = (1, 1)
            first_block.downsample[0].stride = (1, 1)
    return model


# -----------------------------------------------------------------------------
# Sequence models: the MNIST-1D paper's baselines (Greydanus 2020, github greydanus/mnist1d)

class CNN1D(nn.Module):
    """The MNIST-1D paper's CNN.

    Three 1-D convs of 25 channels, ReLU after each: kernel 5 then 3 and 3, all with
    stride 2 and padding 1, then one linear layer on the flattened features. For L = 40
    the maps have length 19, 10 and 5, so the linear layer reads 125 features; with 10
    classes the model has 5,210 parameters, as in the paper's code.
    """

    def __init__(self, length: int, num_classes: int, channels: int = 25):
        super().__init__()
        if length < 3:
            raise ValueError(f"The 1-D CNN needs sequences of length 3 or more (got {length}).")
        self.conv1 = nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, length)).shape[1]
        self.linear = nn.Linear(flat, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) -> the flattened output of the last conv, (B, channels * L')."""
        h = x.reshape(x.shape[0], 1, -1)  # one input channel
        h = self.conv1(h).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class GRUClassifier(nn.Module):
    """The MNIST-1D paper's GRU.

    The sequence is read one scalar per time step by a bidirectional GRU with 6 hidden units
    per direction, starting from a zero state. Its outputs at all L steps (L x 12 numbers)
    are concatenated and fed to one linear layer. For L = 40 and 10 classes the model has
    5,134 parameters, as in the paper's code.
    """

    def __init__(self, length: int, num_classes: int, hidden_size: int = 6):
        super().__init__()
        self.length = length
        self.gru = nn.GRU(input_size=1, hidden_size=hidden_size, batch_first=True,
                          bidirectional=True)
        self.linear = nn.Linear(2 * hidden_size * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.length, 1)  # (batch, time, one feature)
        outputs, _ = self.gru(x)  # (batch, time, 2 * hidden); the initial state is zeros
        return self.linear(outputs.flatten(1))


def _cnn1d(input_shape, num_classes, dropout) -> nn.Module:
    return CNN1D(input_shape[0], num_classes)


def _gru(input_shape, num_classes, dropout) -> nn.Module:
    return GRUClassifier(input_shape[0], num_classes)


# -----------------------------------------------------------------------------
# Looking inside

def first_layer_filters(model: nn.Module) -> np.ndarray | None:
    """The weights of the model's first convolution, arranged for display.

    * 2-D conv with 3 input channels: ``(n_filters, h, w, 3)``, the RGB filter;
    * other 2-D convs: ``(n_filters, h, w)``, averaged over the input channels;
    * 1-D conv: ``(n_filters, 1, k)``, averaged over the input channels;
    * ``None`` when the model has no convolution (softmax, mlp, gru).

    Returns a float32 copy on the CPU, detached from the model.
    """
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))), None)
    if conv is None:
        return None
    weight = conv.weight.detach().float().cpu()  # (out, in, k) or (out, in, kh, kw)
    if isinstance(conv, nn.Conv1d):
        return weight.mean(dim=1, keepdim=True).numpy()
    if weight.shape[1] == 3:
        return weight.permute(0, 2, 3, 1).contiguous().numpy()
    return weight.mean(dim=1).numpy()
