"""The Training tab's sheet: the loss, the chosen optimiser's update and the learning-rate schedule.

Each formula is written to say what :mod:`playground.ml.training.trainer` and torch really
compute, not a textbook variant: torch's SGD adds the weight decay to the gradient and its
momentum buffer is v <- mu v + g (no (1 - mu) factor, no dampening); Adam's weight decay
is that same L2 term in the gradient, while AdamW shrinks the weights directly
("decoupled"); Adam's bias corrections use the step t counted from 1. The schedule
factors are the trainer's :func:`~playground.ml.training.trainer.lr_factor`, and
:data:`SCHEDULE_FACTORS` writes each one again as a function of p, so that a test can
check the formula shown against the code that runs.

Live values (keys): ``loss`` (latest batch), ``train_loss`` and ``val_loss`` (per epoch),
``lr``, ``lr0`` (the configured rate), ``step``, ``total_steps``, ``weight_decay``,
``grad_norm``, ``batch_size``; ``beta1``, ``beta2``, ``eps`` and ``momentum`` are constants
(torch's defaults and the trainer's momentum) that live values may replace.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import Formula, Sheet, Symbol

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam / AdamW defaults
MOMENTUM = 0.9  # TrainConfig.momentum (the Training tab has no field for it)
WARMUP = 0.05  # the warm-up share of the run in trainer.lr_factor


def _step_factor(p: float) -> float:
    return 0.1 ** ((p >= 0.5) + (p >= 0.75))


def _cosine_factor(p: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * p))


def _warmup_cosine_factor(p: float) -> float:
    if p < WARMUP:
        return p / WARMUP
    return 0.5 * (1.0 + math.cos(math.pi * (p - WARMUP) / (1.0 - WARMUP)))


# f(p), p = s / T: the factor each sheet's formula writes, as code (s = updates done before this one).
SCHEDULE_FACTORS: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "step": _step_factor,
    "cosine": _cosine_factor,
    "warmup_cosine": _warmup_cosine_factor,
}

# -- symbols used in several formulas --------------------------------------------------------
THETA = Symbol(r"\theta_t", "", "the weights after update t")
GRAD = Symbol(r"\Vert\nabla_\theta L\Vert", "grad_norm", "size of the loss gradient at the latest step")
LR = Symbol(r"\eta_t", "lr", "learning rate of the latest update")
LR0 = Symbol(r"\eta_0", "lr0", "learning rate set in the form")
STEP = Symbol(r"t", "step", "updates done so far (torch counts from 1)", "{:.0f}")
TOTAL = Symbol(r"T", "total_steps", "updates in the whole run (batches per epoch \u00d7 epochs)", "{:.0f}")
DECAY = Symbol(r"\lambda", "weight_decay", "weight decay")
PROGRESS = Symbol(r"p", "progress", "share of the run done before update t")
FACTOR = Symbol(r"f(p)", "lr_factor", "the schedule's multiplier now (measured: the rate now over the rate set)")


def _loss_formulas() -> list[Formula]:
    return [
        Formula("Loss: cross-entropy, the mean of -log(probability given to the true class)",
                r"L = -\dfrac{1}{N}\sum_{i=1}^{N} \log\,\mathrm{softmax}(z_i)_{y_i}",
                [Symbol("L", "loss", "training loss of the latest batch"),
                 Symbol(r"L_{\mathrm{train}}", "train_loss", "mean training loss over the last epoch"),
                 Symbol(r"L_{\mathrm{val}}", "val_loss", "loss on the validation set after the last epoch"),
                 Symbol("N", "batch_size", "samples in a batch (the whole validation set for its loss)", "{:.0f}"),
                 Symbol(r"y_i", "", "the true class of sample i")]),
        Formula("Softmax: the outputs turned into class probabilities",
                r"\mathrm{softmax}(z)_y = \dfrac{e^{z_y}}{\sum_k e^{z_k}}",
                [Symbol("z", "", "the network's outputs (logits) for one sample, one per class"),
                 Symbol("k", "", "runs over the classes")]),
    ]


def _gradient_formula(coupled_decay: bool) -> Formula:
    """g_t: the loss gradient, plus the L2 term where torch adds the weight decay to it."""
    if coupled_decay:
        return Formula("Gradient, with weight decay added to it (L2)",
                       r"g_t = \nabla_\theta L(\theta_{t-1}) + \lambda\,\theta_{t-1}",
                       [GRAD, DECAY, THETA])
    return Formula("Gradient (AdamW keeps the weight decay out of it)",
                   r"g_t = \nabla_\theta L(\theta_{t-1})", [GRAD, THETA])


def _adam_formulas() -> list[Formula]:
    beta1 = Symbol(r"\beta_1", "beta1", "decay of the gradient's running mean (torch's default)")
    beta2 = Symbol(r"\beta_2", "beta2", "decay of the squared gradient's running mean (torch's default)")
    return [
        Formula("Running mean of the gradient", r"m_t = \beta_1 m_{t-1} + (1-\beta_1)\,g_t", [beta1]),
        Formula("Running mean of its square (element by element)",
                r"v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2", [beta2]),
        Formula("Bias correction (m and v start at 0)",
                r"\hat{m}_t = \dfrac{m_t}{1-\beta_1^{\,t}},\quad \hat{v}_t = \dfrac{v_t}{1-\beta_2^{\,t}}",
                [STEP, Symbol(r"1-\beta_1^{\,t}", "bias1", "divides m: small at first, then towards 1", "{:.6g}"),
                 Symbol(r"1-\beta_2^{\,t}", "bias2", "divides v: reaches 1 only after thousands of steps", "{:.6g}")]),
    ]


def _optimizer_formulas(optimizer: str) -> list[Formula]:
    if optimizer == "sgd":
        return [_gradient_formula(True),
                Formula("Update: stochastic gradient descent", r"\theta_t = \theta_{t-1} - \eta_t\,g_t", [LR])]
    if optimizer == "momentum":
        mu = Symbol(r"\mu", "momentum", "momentum: how much of the last velocity is kept")
        return [_gradient_formula(True),
                Formula("Velocity (torch's form: no (1 \u2212 \u03bc) factor, and v starts at 0)",
                        r"v_t = \mu\,v_{t-1} + g_t", [mu]),
                Formula("Update: SGD with momentum", r"\theta_t = \theta_{t-1} - \eta_t\,v_t", [LR])]
    eps = Symbol(r"\epsilon", "eps", "keeps the division finite (torch's default)", "{:.0e}")
    if optimizer == "adam":
        return [_gradient_formula(True), *_adam_formulas(),
                Formula("Update: Adam",
                        r"\theta_t = \theta_{t-1} - \eta_t\,\dfrac{\hat{m}_t}{\sqrt{\hat{v}_t}+\epsilon}", [LR, eps])]
    if optimizer == "adamw":
        return [_gradient_formula(False), *_adam_formulas(),
                Formula("Update: AdamW (decoupled weight decay: the weights shrink directly)",
                        r"\theta_t = (1-\eta_t\lambda)\,\theta_{t-1}"
                        r" - \eta_t\,\dfrac{\hat{m}_t}{\sqrt{\hat{v}_t}+\epsilon}",
                        [LR, DECAY, eps])]
    raise ValueError(f"Unknown optimizer {optimizer!r}")


def _schedule_formulas(schedule: str) -> list[Formula]:
    rate = Formula("Learning rate of update t (its factor uses the updates done before it)",
                   r"\eta_t = \eta_0\,f(p),\quad p = \dfrac{t-1}{T}", [LR, LR0, STEP, TOTAL, PROGRESS])
    if schedule == "constant":
        factor = [Formula("Schedule: constant", r"f(p) = 1", [FACTOR])]
    elif schedule == "step":
        factor = [Formula("Schedule: step, \u00d70.1 at half the run and again at three quarters",
                          r"f(p) = 0.1^{\,[p \geq 0.5] + [p \geq 0.75]}",
                          [Symbol(r"[\,\cdot\,]", "", "1 when the condition holds, else 0"), FACTOR])]
    elif schedule == "cosine":
        factor = [Formula("Schedule: cosine, from 1 down to 0", r"f(p) = \dfrac{1}{2}\,(1 + \cos\,\pi p)", [FACTOR])]
    elif schedule == "warmup_cosine":
        pw = Symbol(r"p_w", "warmup", "share of the run spent warming up")
        factor = [Formula("Schedule: warm-up, a straight rise from 0 over the first 5% of the run",
                          r"f(p) = \dfrac{p}{p_w}", [pw, FACTOR]),
                  Formula("Schedule: then a cosine, from 1 down to 0, for the rest",
                          r"f(p) = \dfrac{1}{2}\left(1 + \cos\,\pi\,\dfrac{p - p_w}{1 - p_w}\right)", [pw])]
    else:
        raise ValueError(f"Unknown schedule {schedule!r}")
    return [rate, *factor]


NOTE = (
    "What to look at. Over-fitting shows in the two loss curves: the training loss keeps "
    "falling while the validation loss stops falling and turns up; from then on the network "
    "learns its training samples rather than the task. The gap between the two is how much "
    "it has memorised (a small gap with both losses high means under-fitting instead: a "
    "bigger model, a higher learning rate or more epochs). More weight decay or dropout "
    "narrows the gap. The learning-rate plot is the schedule itself, \u03b7\u2080\u00b7f(p): flat, in "
    "steps, a cosine or a short warm-up then a cosine. The loss often drops right after a "
    "step down of the rate, and a loss that jumps up or becomes NaN usually means the rate "
    "is too high for this optimiser."
)


def training_sheet(optimizer: str, schedule: str) -> Sheet:
    """The sheet for the Training tab with this optimiser and schedule (the trainer's keys)."""
    formulas = [*_loss_formulas(), *_optimizer_formulas(optimizer), *_schedule_formulas(schedule)]
    constants = {"beta1": ADAM_BETA1, "beta2": ADAM_BETA2, "eps": ADAM_EPS, "momentum": MOMENTUM, "warmup": WARMUP}
    return Sheet("Training", formulas, NOTE, constants)
