"""The Learn sheets: they build, every formula draws with mathtext, and what they write is what the code does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from playground.learn import MISSING, Formula, Sheet, Symbol, derived_values, format_value, render_alpha
from playground.learn.drag import METHODS as DRAG_METHODS
from playground.learn.chat import chat_sheet
from playground.learn.diffusion import diffusion_sheet
from playground.learn.drag import drag_sheet
from playground.learn.separation import separation_sheet
from playground.learn.som import NEIGHBORHOOD_FUNCTIONS, som_sheet
from playground.learn.training import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, SCHEDULE_FACTORS, training_sheet
from playground.ml import som as mlsom
from playground.ml.diffusion.samplers import SAMPLERS as DIFFUSION_SAMPLERS
from playground.ml.training import trainer

OPTIMIZERS = list(trainer.OPTIMIZERS)
SCHEDULES = list(trainer.SCHEDULES)
ALL_SHEETS = ([(f"training {o} {s}", training_sheet(o, s)) for o in OPTIMIZERS for s in SCHEDULES]
              + [(f"som {n} {m}", som_sheet(n, m)) for n in mlsom.NEIGHBORHOODS for m in mlsom.MODES]
              + [(f"drag {m}", drag_sheet(m)) for m in DRAG_METHODS]
              + [(f"separation {c}", separation_sheet(c)) for c in (2, 3)]
              + [(f"diffusion {s}", diffusion_sheet(s)) for s in DIFFUSION_SAMPLERS]
              + [("chat", chat_sheet())])


def _draw(tex: str, size: float) -> np.ndarray:
    """render_alpha, failing the test with the source when mathtext refuses it."""
    try:
        return render_alpha(tex, size)
    except ValueError as exc:  # matplotlib wraps pyparsing's ParseException in a ValueError
        pytest.fail(f"mathtext cannot draw {tex!r}: {exc}")


@pytest.mark.parametrize("label, sheet", ALL_SHEETS, ids=[label for label, _ in ALL_SHEETS])
def test_every_formula_and_symbol_draws(label, sheet):
    assert isinstance(sheet, Sheet) and sheet.formulas and sheet.note.strip()
    for formula in sheet.formulas:
        assert isinstance(formula, Formula) and formula.title
        picture = _draw(formula.tex, 12)
        assert picture.ndim == 2 and picture.shape[0] > 5 and picture.shape[1] > 20
        assert picture.max() > 128, f"{formula.tex!r} drew nothing"
        for symbol in formula.symbols:
            assert isinstance(symbol, Symbol) and symbol.meaning
            small = _draw(symbol.name, 10)
            assert small.size > 0 and small.max() > 128, f"{symbol.name!r} drew nothing"


def test_a_broken_formula_is_reported_not_drawn():
    with pytest.raises(ValueError):
        render_alpha(r"\frac{1}{", 12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_sheet_shows_the_live_keys(optimizer):
    keys = {s.key for s in training_sheet(optimizer, "cosine").symbols()}
    assert {"loss", "val_loss", "train_loss", "lr", "lr0", "step", "total_steps"} <= keys
    if optimizer != "momentum":
        assert "weight_decay" in keys or optimizer == "sgd"
    if optimizer in ("adam", "adamw"):
        assert {"bias1", "bias2", "beta1", "beta2", "eps"} <= keys
    if optimizer == "momentum":
        assert "momentum" in keys


def test_only_adamw_decouples_the_weight_decay():
    def texts(optimizer):
        return " ".join(f.tex for f in training_sheet(optimizer, "constant").formulas)

    for coupled in ("sgd", "momentum", "adam"):
        assert r"\lambda\,\theta_{t-1}" in texts(coupled)
    assert r"\lambda\,\theta_{t-1}" not in texts("adamw")
    assert r"(1-\eta_t\lambda)" in texts("adamw")


@pytest.mark.parametrize("bad", [("rmsprop", "constant"), ("adam", "linear")])
def test_unknown_training_choices_are_refused(bad):
    with pytest.raises(ValueError):
        training_sheet(*bad)


@pytest.mark.parametrize("bad", [("cone", "online"), ("gaussian", "minibatch")])
def test_unknown_som_choices_are_refused(bad):
    with pytest.raises(ValueError):
        som_sheet(*bad)


# -- the numbers the sheets write ------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("total", [1, 7, 100, 1000, 1237])
def test_schedule_factor_is_the_trainers(schedule, total):
    factor = SCHEDULE_FACTORS[schedule]
    for step in range(0, total + 1, max(1, total // 200)):
        assert factor(step / total) == pytest.approx(trainer.lr_factor(schedule, step, total), rel=1e-12, abs=1e-15)
    for step in (0, total // 20, total // 2, (3 * total) // 4, total - 1, total):  # the edges of the pieces
        assert factor(step / total) == pytest.approx(trainer.lr_factor(schedule, step, total), rel=1e-12, abs=1e-15)


def test_schedule_factors_differ_so_the_comparison_means_something():
    points = [0.01, 0.3, 0.6, 0.9]
    rows = {s: tuple(round(SCHEDULE_FACTORS[s](p), 9) for p in points) for s in SCHEDULES}
    assert len(set(rows.values())) == len(SCHEDULES)


def test_schedule_sheet_names_its_own_schedule():
    assert "0.75" in " ".join(f.tex for f in training_sheet("sgd", "step").formulas)
    assert r"\cos" in " ".join(f.tex for f in training_sheet("sgd", "cosine").formulas)
    assert "p_w" in " ".join(f.tex for f in training_sheet("sgd", "warmup_cosine").formulas)
    assert r"\cos" not in " ".join(f.tex for f in training_sheet("sgd", "constant").formulas)


@pytest.mark.parametrize("t", [1, 2, 10, 100, 5000])
def test_adam_bias_corrections_from_the_step(t):
    values = training_sheet("adam", "constant").values_for({"step": t})
    assert values["bias1"] == pytest.approx(1 - 0.9**t)
    assert values["bias2"] == pytest.approx(1 - 0.999**t)
    assert values["beta1"] == 0.9 and values["beta2"] == 0.999 and values["eps"] == 1e-8


def test_derived_values_follow_their_inputs():
    d = derived_values({"step": 11, "total_steps": 100, "lr": 5e-4, "lr0": 1e-3, "beta1": 0.5})
    assert d["bias1"] == pytest.approx(1 - 0.5**11)
    assert d["progress"] == pytest.approx(0.10)  # the rate of update 11 was taken after 10 updates
    assert d["lr_factor"] == pytest.approx(0.5)
    assert derived_values({"step": 0, "total_steps": 10})["progress"] == 0.0
    assert derived_values({"loss": 1.0}) == {}
    assert "bias1" not in derived_values({"step": float("nan")})


def test_live_values_win_over_constants():
    values = training_sheet("momentum", "constant").values_for({"momentum": 0.5})
    assert values["momentum"] == 0.5


def test_values_are_formatted_or_shown_as_missing():
    assert format_value(0.00123) == "0.00123"
    assert format_value(np.float32(2.5)) == "2.5"
    assert format_value(120, "{:.0f}") == "120"
    assert format_value(120.0, "{:d}") == "120"
    for missing in (None, float("nan"), np.nan, "abc", True):
        assert format_value(missing) == MISSING
    assert Symbol("x", "x", "").format({"x": float("nan")}) == MISSING
    assert Symbol("x", "", "").format({"": 3.0}) == MISSING  # no key: no live value at all


def _reference_update(optimizer, theta, g, state, t, lr, wd, mu=0.9):
    """One update written from the sheet's formulas (float64)."""
    if optimizer in ("sgd", "momentum", "adam"):
        g = g + wd * theta
    if optimizer == "sgd":
        return theta - lr * g
    if optimizer == "momentum":
        state["v"] = mu * state.get("v", torch.zeros_like(g)) + g
        return theta - lr * state["v"]
    values = derived_values({"step": t})
    state["m"] = ADAM_BETA1 * state.get("m", torch.zeros_like(g)) + (1 - ADAM_BETA1) * g
    state["v"] = ADAM_BETA2 * state.get("v", torch.zeros_like(g)) + (1 - ADAM_BETA2) * g * g
    m_hat, v_hat = state["m"] / values["bias1"], state["v"] / values["bias2"]
    shrunk = (1 - lr * wd) * theta if optimizer == "adamw" else theta
    return shrunk - lr * m_hat / (v_hat.sqrt() + ADAM_EPS)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_formulas_are_what_torch_does(optimizer):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, dtype=torch.float64, generator=gen)
    param = torch.nn.Parameter(theta.clone())
    cfg = trainer.TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.1)
    opt = trainer.make_optimizer(cfg, [param])
    state: dict = {}
    for t in range(1, 8):
        g = torch.randn(5, dtype=torch.float64, generator=gen)
        param.grad = g.clone()
        opt.step()
        theta = _reference_update(optimizer, theta, g, state, t, cfg.lr, cfg.weight_decay, cfg.momentum)
        assert torch.allclose(param.detach(), theta, rtol=1e-10, atol=1e-12), (optimizer, t)


@pytest.mark.parametrize("kind", mlsom.NEIGHBORHOODS)
@pytest.mark.parametrize("topology", mlsom.TOPOLOGIES)
def test_neighbourhood_formula_is_the_maps(kind, topology):
    grid = mlsom.Grid(5, 6, topology)
    d2, steps = grid.d2_table.ravel(), grid.steps_table.ravel()
    h_of = NEIGHBORHOOD_FUNCTIONS[kind]
    for sigma in (0.7, 1.0, 2.0, 3.5):
        expected = mlsom.neighborhood_weights(kind, d2, steps, sigma)
        written = np.array([h_of(math.sqrt(a), b, sigma) for a, b in zip(d2, steps)])
        np.testing.assert_allclose(written, expected, rtol=1e-12, atol=1e-12, err_msg=f"{kind} sigma={sigma}")


def test_som_sheet_follows_mode_and_neighbourhood():
    online, batch = som_sheet("gaussian", "online"), som_sheet("gaussian", "batch")
    assert "lr" in {s.key for s in online.symbols()} and "lr" not in {s.key for s in batch.symbols()}
    assert r"\leftarrow" in " ".join(f.tex for f in online.formulas)
    assert r"\sum_i h_{c(i)j}" in " ".join(f.tex for f in batch.formulas)
    for sheet in (online, batch):
        assert {"sigma", "qe", "te", "epoch"} <= {s.key for s in sheet.symbols()}
    assert "sigma" not in {s.key for s in som_sheet("halving", "online").symbols()}  # it plays no part there


def test_qe_and_te_as_written_are_the_maps():
    rng = np.random.default_rng(3)
    config = mlsom.SOMConfig(rows=4, cols=5, topology="hexagonal", mode="batch")
    som = mlsom.SOM(config, 3)
    som.set_weights(rng.normal(size=(20, 3)).astype(np.float32))
    x = rng.normal(size=(60, 3)).astype(np.float32)
    w = som.weights.cpu().numpy().astype(np.float64)
    dist = np.linalg.norm(x[:, None, :] - w[None, :, :], axis=2)
    order = np.argsort(dist, axis=1)
    qe = dist[np.arange(len(x)), order[:, 0]].mean()
    te = np.mean([order[i, 1] not in som.grid.neighbours(int(order[i, 0])) for i in range(len(x))])
    got_qe, got_te = som.quality(x)
    assert got_qe == pytest.approx(qe, rel=1e-5)
    assert got_te == pytest.approx(te)
