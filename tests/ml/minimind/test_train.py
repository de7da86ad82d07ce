"""The MiniMind training script: its losses (SFT masked to the answers, DPO), its schedule and
data mixing, a whole tiny tokenizer -> pretrain -> sft -> dpo run on a synthetic corpus (files,
run files, weights that load back), a stop and a divergence, and two gloo processes under
torchrun giving the same losses as one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from playground.ml.minimind import dialogues as D
from playground.ml.minimind import train as T
from playground.ml.minimind.model import MiniMindForCausalLM
from playground.ml.minimind.tokenizer import train_bpe
from playground.ml.training.runs import RunStore

REPO = Path(__file__).resolve().parents[3]
TINY = ["--corpus", "synthetic", "--held-out", "0.25", "--vocab-size", "300", "--hidden-size", "32",
        "--num-hidden-layers", "2", "--num-attention-heads", "2", "--num-key-value-heads", "1",
        "--pretrain-seq-len", "32", "--sft-seq-len", "96", "--dpo-seq-len", "96", "--pretrain-batch", "4",
        "--sft-batch", "4", "--dpo-batch", "2", "--check-every", "2", "--eval-samples", "4", "--eval-tokens", "128",
        "--sft-lr", "3e-3", "--dpo-lr", "1e-3", "--threads", "1"]
STEPS = 3


def tiny_cfg(**overrides) -> T.TrainConfig:
    base = dict(corpus="synthetic", held_out=0.25, vocab_size=300, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, pretrain_seq_len=32, sft_seq_len=96, dpo_seq_len=96,
                pretrain_batch=4, sft_batch=4, dpo_batch=2, check_every=2, eval_samples=4, eval_tokens=128,
                pretrain_minutes=0, sft_minutes=0, dpo_minutes=0, pretrain_max_steps=STEPS, sft_max_steps=STEPS,
                dpo_max_steps=STEPS)
    return T.TrainConfig(**{**base, **overrides})


def step_losses(runs_dir: Path) -> dict[str, list[float]]:
    store = RunStore(runs_dir)
    out = {}
    for run in store.list_runs():
        stage = store.config(run.id)["stage"]
        out[stage] = [r["loss"] for r in store.metrics(run.id) if r.get("kind") == "step"]
    return out


def drain(gen):
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        return items, stop.value


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = ["The quick brown fox jumps over the lazy dog.", "床前明月光，疑是地上霜。",
             "What does hacker mean? A person who enjoys programming."] * 20
    return train_bpe(texts, 300, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """One process: ``all`` for a few steps a stage on the synthetic corpus."""
    threads = torch.get_num_threads()
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("single")
    out, runs = root / "out", root / "runs"
    code = T.main(["all", *TINY, "--minutes", "0", "--max-steps", str(STEPS), "--out-dir", str(out),
                   "--runs-dir", str(runs)])
    # main() gives back the signal handlers it installed (a later test relies on Ctrl-C's own)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    torch.set_num_threads(threads)
    return code, out, runs


# -- losses ---------------------------------------------------------------------------------------
def test_the_sft_loss_counts_only_the_answer_tokens(tok):
    conv = [{"role": "user", "content": "What does hacker mean?"},
            {"role": "assistant", "content": "A person who enjoys programming."}]
    sample = D.encode_sft(conv, tok)
    ids, labels = D.collate([sample], tok.pad_id)
    answer = [i for i in range(ids.shape[1] - 1) if labels[0, i + 1] != D.IGNORE_INDEX]   # positions predicting answers
    prompt = [i for i in range(ids.shape[1] - 1) if labels[0, i + 1] == D.IGNORE_INDEX]
    assert answer and prompt and len(answer) < ids.shape[1] // 2
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, ids.shape[1], tok.vocab_size, generator=g)
    loss = T.masked_lm_loss(logits, labels)
    by_hand = torch.stack([-torch.log_softmax(logits[0, i], -1)[labels[0, i + 1]] for i in answer]).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    for i in prompt[::3]:           # the prediction of a prompt token (label masked) does not count
        changed = logits.clone()
        changed[0, i] = torch.randn(tok.vocab_size, generator=g) * 5
        assert float(T.masked_lm_loss(changed, labels)) == pytest.approx(float(loss), abs=1e-7)
    changed = logits.clone()
    changed[0, answer[0]] = torch.randn(tok.vocab_size, generator=g) * 5
    assert abs(float(T.masked_lm_loss(changed, labels)) - float(loss)) > 1e-3
    # the same through a model: no gradient reaches the logits of masked positions
    model = MiniMindForCausalLM(T.model_config(tiny_cfg(), tok.vocab_size))
    out = model(ids).logits
    out.retain_grad()
    T.masked_lm_loss(out, labels).backward()
    grad = out.grad[0].abs().sum(-1)
    assert float(grad[prompt].sum()) == 0.0 and bool((grad[answer] > 0).all())


def test_sequence_logprobs_sum_the_labelled_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 3, 6]])
    got = T.sequence_logprobs(logits, labels)
    logp = torch.log_softmax(logits, -1)
    want0 = logp[0, 1, 3] + logp[0, 2, 4]
    want1 = logp[1, 0, 1] + logp[1, 1, 2] + logp[1, 2, 3] + logp[1, 3, 6]
    assert torch.allclose(got, torch.stack([want0, want1]))


def test_the_dpo_loss_is_log_2_at_the_reference_and_falls_when_the_policy_prefers_chosen():
    g = torch.Generator().manual_seed(2)
    ref_c, ref_r = -torch.rand(6, generator=g) * 50, -torch.rand(6, generator=g) * 50
    at_ref = T.dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=0.1)
    assert torch.allclose(at_ref, torch.full((6,), math.log(2)))
    better = T.dpo_loss(ref_c + 2.0, ref_r, ref_c, ref_r, beta=0.1)
    assert bool((better < at_ref).all())
    assert bool((T.dpo_loss(ref_c, ref_r - 2.0, ref_c, ref_r, beta=0.1) < at_ref).all())
    assert bool((T.dpo_loss(ref_c - 2.0, ref_r, ref_c, ref_r, beta=0.1) > at_ref).all())
    # beta * margin inside the sigmoid
    assert float(better[0]) == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))), rel=1e-6)


def test_the_schedule_warms_up_then_follows_a_cosine_to_a_tenth():
    lrs = [T.lr_at(s, 1e-3, 10, 110, 0.1) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4)
    assert T.lr_at(50, 1e-3, 10, None, 0.1) == 1e-3     # the step count not known yet: the peak


# -- data -----------------------------------------------------------------------------------------
def test_a_mix_repeats_small_sources_and_rotates_through_a_share_of_big_ones():
    mix = T.EpochMix.of([20, 30], [2.0, 0.5], [2, 1], seed=0)      # 10 records x 2 copies; 30 records, half
    assert mix.per_epoch == 20 + 15
    e0, e1 = mix.items(0), mix.items(1)
    assert sorted(i for i in e0 if i < 20) == list(range(20))
    big0, big1 = {i for i in e0 if i >= 20}, {i for i in e1 if i >= 20}
    assert len(big0) == 15 and big0 | big1 == set(range(20, 50)) and not big0 & big1
    assert np.array_equal(T.EpochMix.of([20, 30], [2.0, 0.5], [2, 1], seed=0).items(1), e1)
    with pytest.raises(Exception, match="source=factor"):
        T.parse_mix("poems:8", ["poems"])
    assert T.parse_mix("poems=8, quotes=0.5", ["poems", "quotes", "devil"]) == {"poems": 8, "quotes": 0.5,
                                                                                 "devil": 1.0}


def test_packed_rows_are_full_and_cover_each_epoch():
    tokens = [np.arange(k * 100, k * 100 + n) for k, n in enumerate([7, 12, 5, 9, 15])]
    packed = T.PackedText(tokens, T.EpochMix([(5, 5)], seed=0), seq_len=8, seed=0)
    assert packed.rows_in(0) == 48 // 8
    rows = packed.rows(0, 6)
    assert rows.shape == (6, 8)
    flat = set(rows.reshape(-1).tolist())
    assert len(flat) == 48 and flat <= set(np.concatenate(tokens).tolist())
    assert np.array_equal(packed.rows(6, 2), packed.epoch_rows(1)[:2])


# -- whole runs -----------------------------------------------------------------------------------
def test_a_whole_run_writes_the_tokenizer_three_weight_files_and_run_files(single_run):
    code, out, runs = single_run
    assert code == 0
    for name in ("tokenizer.json", "tokenizer_config.json", "pretrain.safetensors", "sft.safetensors",
                 "dpo.safetensors", "pretrain.json", "sft.json", "dpo.json"):
        assert (out / name).is_file(), name
    sides = {s: json.loads((out / f"{s}.json").read_text()) for s in T.MODEL_STAGES}
    for stage, side in sides.items():
        assert side["stage"] == stage and side["steps"] == STEPS and side["seed"] == 0
        assert side["made_by"] == T.MADE_BY and "--max-steps 3" in side["command"]
        assert side["held_out_perplexity"] > 1 and side["config"]["vocab_size"] == 300
        assert f"--{stage}-max-steps {STEPS}" in side["reproduce"]
        assert side["data"]["records"]["poems"]["held_out"] > 0
    assert sides["sft"]["starts_from"] == "pretrain.safetensors" and sides["dpo"]["starts_from"] == "sft.safetensors"
    assert 0 <= sides["dpo"]["preference_accuracy"] <= 1
    store = RunStore(runs)
    listed = store.list_runs()
    assert len(listed) == 3 and {r.status for r in listed} == {"finished"}
    losses = step_losses(runs)
    assert set(losses) == set(T.MODEL_STAGES) and all(len(v) == STEPS for v in losses.values())
    assert losses["dpo"][0] == pytest.approx(math.log(2), abs=1e-6)   # the policy starts as the reference
    for run in listed:
        epochs = [r for r in store.metrics(run.id) if r.get("kind") == "epoch"]
        assert [e["step"] for e in epochs] == [0, 2]
        assert store.weights_path(run.id) is not None

    model, side = T.load_model(out / "dpo.safetensors")
    assert isinstance(model, MiniMindForCausalLM) and side["stage"] == "dpo"
    try:
        from playground.ml.minimind import loaders
    except ImportError:
        loaders = None
    if loaders is not None and hasattr(loaders, "load_minimind"):
        found = loaders.load_minimind(out / "dpo.safetensors")
        ids = torch.tensor([[1, 50, 60, 70]])
        with torch.no_grad():
            assert torch.allclose(found.model.eval()(ids).logits, model.eval()(ids).logits, atol=1e-5)


def test_a_stop_request_saves_and_ends_the_stage_as_stopped(single_run, tmp_path):
    _, out, _ = single_run
    work = tmp_path / "out"
    work.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (work / name).write_bytes((out / name).read_bytes())
    cfg = tiny_cfg(pretrain_max_steps=50)
    seen: list = []
    gen = T.train_stage("pretrain", cfg, work, store=RunStore(tmp_path / "runs"), state_dir=tmp_path / "state",
                        should_stop=lambda: len([s for s in seen if isinstance(s, T.MiniMindStep)]) >= 2)
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert result["status"] == "stopped" and result["steps"] == 2
    assert json.loads((work / "pretrain.json").read_text())["status"] == "stopped"
    assert RunStore(tmp_path / "runs").list_runs()[0].status == "stopped"
    # resumed from its state, it goes on from step 3
    gen = T.train_stage("pretrain", tiny_cfg(pretrain_max_steps=4), work, state_dir=tmp_path / "state")
    items, result = drain(gen)
    assert [s.step for s in items if isinstance(s, T.MiniMindStep)] == [3, 4] and result["status"] == "finished"


def test_a_nan_loss_stops_as_diverged_and_saves_nothing(single_run, tmp_path, monkeypatch):
    _, out, _ = single_run
    work = tmp_path / "out"
    work.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (work / name).write_bytes((out / name).read_bytes())
    real = T._Stage.loss

    def poisoned(self, model, step, device):
        loss, numbers = real(self, model, step, device)
        return (loss * float("nan"), [float("nan"), *numbers[1:]]) if step == 1 else (loss, numbers)

    monkeypatch.setattr(T._Stage, "loss", poisoned)
    store = RunStore(tmp_path / "runs")
    with pytest.raises(ArithmeticError, match="diverged"):
        drain(T.train_stage("pretrain", tiny_cfg(), work, store=store))
    assert not (work / "pretrain.safetensors").exists()
    assert store.list_runs()[0].status == "diverged"


def test_a_moe_model_trains_with_its_balance_loss(single_run, tmp_path, monkeypatch):
    _, out, _ = single_run
    work = tmp_path / "out"
    work.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (work / name).write_bytes((out / name).read_bytes())
    aux = []
    real = MiniMindForCausalLM.forward

    def spy(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if self.training:
            aux.append(float(result.aux_loss.detach()))
        return result

    monkeypatch.setattr(MiniMindForCausalLM, "forward", spy)
    items, result = drain(T.train_stage("pretrain", tiny_cfg(moe_experts=2, pretrain_max_steps=2), work))
    assert result["status"] == "finished" and result["model"].config.use_moe
    assert len(aux) == 2 and all(a > 0 for a in aux)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_losses_of_one_with_the_same_global_batch(single_run, tmp_path):
    _, single_out, single_runs = single_run
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "playground.ml.minimind.train", "all", *TINY,
           "--minutes", "0", "--max-steps", str(STEPS), "--out-dir", str(out), "--runs-dir", str(runs)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 and "SIGABRT" in done.stderr + done.stdout:
        # Seen once on a heavily loaded 2-core machine: a gloo worker aborted while connecting.
        # One fresh try (new port, fresh folders); a real fault fails it the same way.
        first = done
        out, runs = tmp_path / "out2", tmp_path / "runs2"
        cmd[cmd.index("--master-port") + 1] = str(free_port())
        cmd[cmd.index("--out-dir") + 1], cmd[cmd.index("--runs-dir") + 1] = str(out), str(runs)
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, first.stderr[-2000:] + "\n--- and again ---\n" + done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "tokenizer.json").read_bytes() == (single_out / "tokenizer.json").read_bytes()
    assert len(RunStore(runs).list_runs()) == 3                       # rank 0 alone writes run files
    one, two = step_losses(single_runs), step_losses(runs)
    for stage in T.MODEL_STAGES:
        assert len(two[stage]) == STEPS
        np.testing.assert_allclose(two[stage], one[stage], atol=1e-5, rtol=0, err_msg=stage)
    side = json.loads((out / "dpo.json").read_text())
    assert side["processes"] == 2 and side["steps"] == STEPS
