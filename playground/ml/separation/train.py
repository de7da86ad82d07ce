"""Train the Separation tab's default Conv-TasNet on text-to-speech mixtures (:mod:`.speech`).

    python -m playground.ml.separation.train --preset default --minutes 60 \\
        --out resources/convtasnet-tts-8k.safetensors [--max-steps N] [--state data/run.state.pt]

The paper's recipe, scaled to a CPU: uPIT with negative SI-SNR, Adam at 1e-3, gradient
clipping at L2 norm 5, the rate halved when the validation SI-SNR has not improved for
``patience`` checks; 8 kHz, random two-speaker mixtures made on the fly from a bank of
synthesised utterances. The run is written as a Training-tab run (its loss curve, and
validation SI-SNRi as "val_loss" with the sign flipped so lower is better), its state is
kept every few minutes in ``--state`` so that a stopped run continues where it was, and
the final (or stopped) weights go to ``--out`` with the command, config and seed beside them.
``--grow-from weights.safetensors`` starts from a smaller model's weights, grown to the preset
by :func:`.model.grow` (wider channels start out as split copies, new blocks as identities,
so the output is unchanged), and goes on from its steps;
its runs stay in the ``stages`` of the JSON, followed by the growth. ``--init-from`` does the same
for weights of the preset's own size (a new run, with a new optimiser and new data, that fine-tunes
shipped weights when their state file is gone).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserError
from ...progress import Progress
from ..training import runs as runstore
from ..training import script
from . import losses, speech
from .model import ConvTasNet, ConvTasNetConfig, parameter_count

PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default's first 16,637 steps: small enough for a real-time factor well under 0.05 on 2 cores.
    "default": dict(N=64, L=16, B=64, H=128, Sc=64, P=3, X=6, R=2, norm="gLN", causal=False),
    # The live-mode model: the same size, cumulative layer norm, causal convolutions.
    "causal": dict(N=64, L=16, B=64, H=128, Sc=64, P=3, X=6, R=2, norm="cLN", causal=True),
    # The default grown deeper (X 6 -> 8, ``--grow-from`` the default's weights): a receptive field of
    # 1.0 s instead of 0.25 s for 1.3x the compute.
    "default-x8": dict(N=64, L=16, B=64, H=128, Sc=64, P=3, X=8, R=2, norm="gLN", causal=False),
    # default-x8 grown wider (``--grow-from`` its weights): 4x the encoder's filters, 1.5x the bottleneck,
    # 2x the skips. These widths cost little time (H, read by every norm and PReLU, stays 128).
    "default-wide": dict(N=256, L=16, B=96, H=128, Sc=128, P=3, X=8, R=2, norm="gLN", causal=False),
    # default-wide grown deeper (``--grow-from`` its weights): a third repeat of the 8 blocks, the
    # paper's R=3 and its 1.5 s receptive field, for about 1.4x the compute.
    "default-deep": dict(N=256, L=16, B=96, H=128, Sc=128, P=3, X=8, R=3, norm="gLN", causal=False),
    # The paper's best configuration (Table II).
    "paper": dict(),
}


@dataclass
class TrainConfig:
    preset: str = "default"
    seed: int = 0
    batch: int = 8
    segment_s: float = 2.0
    lr: float = 1e-3
    clip: float = 5.0
    patience: int = 3
    check_every: int = 100         # steps between validation checks
    minutes: float = 60.0          # the time budget (in all, resumed runs included); it stops and saves after it
    max_steps: int = 0             # stop after this many steps too (0: no limit); repeat a run with its step count
    utterances: int = 1500         # the training bank
    val_mixtures: int = 64
    mask_act: str = "sigmoid"
    speed: float = 0.0             # speed perturbation: half the sources played 1 +- speed times as fast
    compile: bool = False          # torch.compile the model for training (about 1.5x faster on a CPU)
    corpus: float = 0.0            # the share of the bank's utterances reading corpus sentences (fortunes)
    resume_lr: float = 0.0         # when resuming: set the learning rate to this (0: keep the saved one)
    grow_from: str = ""            # start from these (smaller) weights, grown to the preset (model.grow);
                                   # the steps go on from theirs (so --max-steps counts their steps too)
    init_from: str = ""            # start from these weights of the preset's size; the steps go on from theirs
    random_variants: float = 0.0   # the share of the bank's espeak-ng voices given a new random variant
    alike: float = 0.0             # the share of mixtures of one variant in different accents (speech.make_mixture)
    invert: float = 0.0            # the share of mixtures with their polarity inverted (times -1)


@dataclass
class SepStep:
    step: int
    loss: float
    lr: float
    seconds: float


def evaluate(model: ConvTasNet, mixtures: torch.Tensor, sources: torch.Tensor, batch: int = 16) -> float:
    """Mean SI-SNRi (dB) of ``model`` over fixed mixtures [M, T] with sources [M, C, T]."""
    model.eval()
    values = []
    with torch.inference_mode():
        for k in range(0, len(mixtures), batch):
            est = model(mixtures[k:k + batch])
            values.append(losses.si_snr_improvement(est, sources[k:k + batch], mixtures[k:k + batch]).mean(dim=1))
    model.train()
    return float(torch.cat(values).mean())


def fixed_mixtures(bank: speech.UtteranceBank, count: int, segment: int, seed: int) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    pairs = [speech.make_mixture(bank, rng, segment) for _ in range(count)]
    return torch.from_numpy(np.stack([m for m, _ in pairs])), torch.from_numpy(np.stack([s for _, s in pairs]))


def train(cfg: TrainConfig, store: runstore.RunStore | None, out: Path | None, state_path: Path | None,
          cache_dir: Path | None, command: str = "") -> Generator[Any, None, dict]:
    torch.manual_seed(cfg.seed)
    model_cfg = ConvTasNetConfig(**PRESETS[cfg.preset], mask_act=cfg.mask_act, sample_rate=speech.SAMPLE_RATE)
    model = ConvTasNet(model_cfg)
    resuming = state_path is not None and state_path.exists()
    earlier_stages = None
    if cfg.grow_from and cfg.init_from:
        raise UserError("Give --grow-from or --init-from, not both.")
    if cfg.grow_from and not resuming:      # (checked before the bank is built: a mismatch is told at once)
        model, earlier_stages = grown(model_cfg, Path(cfg.grow_from))
    elif cfg.init_from and not resuming:
        model, earlier_stages = started_from(model_cfg, Path(cfg.init_from))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    segment = int(cfg.segment_s * speech.SAMPLE_RATE)
    bank = None
    bank_config = speech.BankConfig(cfg.utterances, cfg.seed, corpus=cfg.corpus, random_variants=cfg.random_variants)
    for item in speech.build_bank(bank_config, cache_dir):
        if isinstance(item, Progress):
            yield item
        else:
            bank = item
    assert bank is not None
    val_bank = None
    for item in speech.build_bank(speech.BankConfig(200, cfg.seed + 1000), cache_dir):
        val_bank = item if not isinstance(item, Progress) else val_bank
    val_mix, val_src = fixed_mixtures(val_bank, cfg.val_mixtures, segment, cfg.seed + 7)
    step, best, bad_checks, elapsed = 0, -math.inf, 0, 0.0
    stages: list[dict] = []        # earlier runs that this one continues (command, config, steps)
    if resuming:
        from ..checkpoints import load_state_dict_strict, torch_load

        state = torch_load(state_path)
        load_state_dict_strict(model, state["model"], what="the resumed model")
        opt.load_state_dict(state["opt"])
        step, best, bad_checks = int(state["step"]), float(state["best"]), int(state["bad_checks"])
        elapsed = float(state.get("seconds", 0.0))
        if cfg.resume_lr > 0:
            for group in opt.param_groups:
                group["lr"] = cfg.resume_lr
            bad_checks = 0
        stages = list(state.get("stages") or earlier_stage(out, step))
        started = cfg.grow_from or cfg.init_from
        again = " (the state goes on; --grow-from/--init-from is not used again)" if started else ""
        yield Progress(None, f"resumed at step {step}{again}")
    elif earlier_stages is not None:
        stages = earlier_stages
        step = int(stages[-1]["to_step"])
        yield Progress(None, f"{'grown' if cfg.grow_from else 'started'} from {cfg.grow_from or cfg.init_from} "
                             f"(step {step})")
    first_step = step
    batches = speech.mixture_batches(bank, cfg.batch, segment, cfg.seed + step, speed=cfg.speed,
                                      alike=cfg.alike, invert=cfg.invert)
    forward = compiled(model) if cfg.compile else model
    run_config = {"dataset": "TTS two-speaker mixtures (espeak-ng, flite)", "model": f"conv-tasnet-{cfg.preset}",
                  **asdict(cfg), "parameters": parameter_count(model), "model_config": model_cfg.to_dict(),
                  "data_note": "Training loss = negative SI-SNR (uPIT); validation loss = -SI-SNRi (dB) on "
                               "held-in voices."}
    writer = store.create(run_config, f"Conv-TasNet {cfg.preset} on TTS mixtures") if store is not None else None
    start = time.perf_counter() - elapsed
    last_state = time.perf_counter()
    status = runstore.RUNNING
    recent: list[float] = []
    try:
        while time.perf_counter() - start < cfg.minutes * 60 and not (cfg.max_steps and step >= cfg.max_steps):
            mix, src = (torch.from_numpy(a) for a in next(batches))
            try:
                est = forward(mix)
            except Exception as exc:  # noqa: BLE001 - a compiler that fails falls back to plain PyTorch
                if forward is model:
                    raise
                forward = model
                yield Progress(None, f"torch.compile failed ({type(exc).__name__}); training without it")
                est = model(mix)
            loss, _ = losses.pit_si_snr_loss(est, src)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
            value = float(loss.detach())
            if not math.isfinite(value):
                status = runstore.DIVERGED
                raise ArithmeticError(f"The loss became {value} at step {step}: training diverged.")
            opt.step()
            step += 1
            recent.append(value)
            lr = opt.param_groups[0]["lr"]
            seconds = time.perf_counter() - start
            if writer:
                writer.append({"kind": "step", "step": step, "epoch": step / cfg.check_every, "time": seconds,
                               "loss": value, "lr": lr, "grad_norm": grad_norm})
            yield SepStep(step, value, lr, seconds)
            if step % cfg.check_every == 0:
                val = evaluate(model, val_mix, val_src)
                if val > best + 0.05:
                    best, bad_checks = val, 0
                else:
                    bad_checks += 1
                    if bad_checks >= cfg.patience:
                        for group in opt.param_groups:
                            group["lr"] *= 0.5
                        bad_checks = 0
                if writer:
                    writer.append({"kind": "epoch", "epoch": step / cfg.check_every, "step": step, "time": seconds,
                                   "train_loss": float(np.mean(recent)), "val_loss": -val,
                                   "train_acc": float("nan"), "val_acc": float("nan")})
                    writer.update(epochs_done=step // cfg.check_every)
                recent = []
                yield Progress(min(seconds / (cfg.minutes * 60), 1.0),
                               f"step {step}: validation SI-SNRi {val:.2f} dB (best {best:.2f}), lr {lr:g}")
            if state_path is not None and time.perf_counter() - last_state > 300:
                last_state = time.perf_counter()
                save_state(state_path, model, opt, step, best, bad_checks, time.perf_counter() - start,
                           stages + [this_stage(command, cfg, first_step, step)])
        status = runstore.FINISHED
    finally:
        status = script.ended_status(status)
        seconds = time.perf_counter() - start
        stages.append(this_stage(command, cfg, first_step, step))
        if state_path is not None and status in (runstore.FINISHED, runstore.STOPPED):
            save_state(state_path, model, opt, step, best, bad_checks, seconds, stages)
        val = evaluate(model, val_mix, val_src)
        if out is not None and status in (runstore.FINISHED, runstore.STOPPED):
            from .loaders import save_separator

            save_separator(out, model, {
                "command": command, "train_config": asdict(cfg), "seed": cfg.seed, "steps": step,
                "seconds": round(seconds, 1), "status": status, "made_by": "playground.ml.separation.train",
                "validation_si_snri_db": round(val, 2), "stages": stages,
                "training_data": training_data(cfg)})
        if writer:
            writer.save_weights(model.state_dict())
            writer.close(status, seconds=seconds, steps=step)
    return {"status": status, "steps": step, "seconds": seconds, "val_si_snri": val, "model": model}


def save_state(path: Path, model, opt, step: int, best: float, bad_checks: int, seconds: float,
               stages: list[dict] | None = None) -> None:
    script.save_state(path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                             "bad_checks": bad_checks, "seconds": seconds, "stages": stages or []})


def training_data(cfg: TrainConfig) -> str:
    """What the model was trained on, in words (for the weights' JSON)."""
    text = "sentences of playground.ml.separation.speech's grammar"
    if cfg.corpus > 0:
        text += f" and, for {cfg.corpus:.0%} of the utterances, the training half of Debian's fortunes sentences"
    speed = f", half the sources speed-perturbed by up to {cfg.speed:.0%}" if cfg.speed > 0 else ""
    variants = (f" ({cfg.random_variants:.0%} of the espeak-ng voices with a new random variant made from a "
                "training one)" if cfg.random_variants > 0 else "")
    alike = (f", {cfg.alike:.0%} of the mixtures of one espeak-ng variant in two accents" if cfg.alike > 0
             else "")
    invert = f", {cfg.invert:.0%} of the mixtures with their polarity inverted" if cfg.invert > 0 else ""
    return (f"two-speaker mixtures of espeak-ng and flite voices{variants} reading {text}, "
            f"synthesised offline{speed}{alike}{invert}")


def this_stage(command: str, cfg: TrainConfig, first_step: int, step: int) -> dict:
    """What one run did: its command and config, and the steps it took (``from_step`` to ``to_step``)."""
    return {"command": command, "train_config": asdict(cfg), "from_step": first_step, "to_step": step}


def earlier_stage(out: Path | None, step: int) -> list[dict]:
    """For a state kept before stages were: the run that made ``out``'s weights, from its JSON."""
    side = out.with_suffix(".json") if out is not None else None
    if side is None or not side.exists():
        return []
    import json

    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return []
    if data.get("steps") != step:
        return []
    return [{"command": data.get("command", ""), "train_config": data.get("train_config", {}), "from_step": 0,
             "to_step": step, "note": "read back from the weights' JSON (kept before stages were recorded)"}]


def earlier_weights(path: Path) -> tuple[ConvTasNet, list[dict], int]:
    """The weights at ``path``, the stages that made them and their step count."""
    from ..checkpoints import read_sidecar
    from .loaders import read_separator_file

    small = read_separator_file(path)
    data = read_sidecar(path) or {}
    stages = list(data.get("stages") or [])
    steps = int(data.get("steps", stages[-1]["to_step"] if stages else 0))
    return small, stages or earlier_stage(path, steps), steps     # (weights from before stages were kept)


def started_from(model_cfg: ConvTasNetConfig, path: Path) -> tuple[ConvTasNet, list[dict]]:
    """The weights at ``path`` (``--init-from``), which must be of ``model_cfg``'s size, and their stages."""
    model, stages, steps = earlier_weights(path)
    preset = model_cfg.to_dict()
    differ = [f"{k} {v} (the preset's {preset[k]})" for k, v in model.config.to_dict().items() if preset[k] != v]
    if differ:
        raise UserError(f"--init-from {path.name} has {', '.join(differ)}, not the preset's "
                        "configuration (--grow-from grows smaller weights).")
    if not stages or stages[-1]["to_step"] != steps:
        stages.append({"from_file": path.name, "from_step": steps, "to_step": steps})
    return model, stages


def grown(model_cfg: ConvTasNetConfig, path: Path) -> tuple[ConvTasNet, list[dict]]:
    """The weights at ``path`` grown to ``model_cfg`` (:func:`.model.grow`), and the stages that made them."""
    from .model import WIDTHS, grow

    small, stages, steps = earlier_weights(path)
    changed = [k for k in WIDTHS if getattr(small.config, k) != getattr(model_cfg, k)]   # (X, R always told)
    sizes = ", ".join(f"{k} {getattr(small.config, k)} -> {getattr(model_cfg, k)}" for k in ["X", "R", *changed])
    stages.append({"grown": sizes,
                   "from_file": path.name, "from_step": steps, "to_step": steps,
                   "note": "model.grow: new channels copy old ones (their outputs split in random shares that "
                           "add up to 1), the old blocks kept in place, each new block's residual and skip "
                           "convolutions zero, so the grown model starts out computing the same output"})
    return grow(small, model_cfg), stages


def compiled(model: ConvTasNet):
    """The model through ``torch.compile``: inductor fuses the norms' and PReLUs' elementwise work."""
    return torch.compile(model)


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m playground.ml.separation.train",
                                description="Train the Separation tab's Conv-TasNet on TTS mixtures.")
    script.add_config_arguments(p, d)
    p.add_argument("--out", default="", help="where the final weights go (.safetensors + .json)")
    p.add_argument("--state", default="", help="a state file kept during the run (and continued from)")
    p.add_argument("--cache", default="data/tts-cache", help="where the synthesised utterances are kept")
    p.add_argument("--no-run", action="store_true", help="do not keep the run in the Training tab's run folder")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    cfg = script.config_from_arguments(TrainConfig, args)
    if cfg.preset not in PRESETS:
        p.error(f"--preset must be one of {', '.join(PRESETS)}")
    command = "python -m playground.ml.separation.train " + " ".join(argv if argv is not None else sys.argv[1:])

    try:
        return _run(cfg, args, command)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(cfg: TrainConfig, args: argparse.Namespace, command: str) -> int:
    gen = train(cfg, None if args.no_run else runstore.RunStore(), Path(args.out) if args.out else None,
                Path(args.state) if args.state else None, Path(args.cache) if args.cache else None, command)
    return script.run_in_terminal(
        gen, args.threads, SepStep,
        lambda s: f"step {s.step:6d}  loss {s.loss:7.3f}  lr {s.lr:g}  ({s.seconds:.0f} s)",
        lambda r: f"{r['status']}: {r['steps']} steps in {r['seconds']:.0f} s, "
                  f"validation SI-SNRi {r['val_si_snri']:.2f} dB")

if __name__ == "__main__":
    sys.exit(main())
