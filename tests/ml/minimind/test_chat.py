"""The chat glue: a user's .pth found with its tokenizer, a missing or mismatched tokenizer refused."""

from __future__ import annotations

import shutil

import pytest
import torch

from playground.errors import BadFileError
from playground.ml.minimind import chat as chatcore
from playground.ml.minimind.generate import SamplingSettings
from playground.ml.minimind.model import MiniMindConfig, MiniMindForCausalLM
from playground.ml.minimind.tokenizer import train_bpe

TEXTS = ["床前明月光，疑是地上霜。", "A fortune: you will write a test today.", "hacker: one who enjoys code."] * 20


def drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


@pytest.fixture
def layout(tmp_path):
    """MiniMind's own layout: out/full_sft_512.pth beside model/tokenizer.json."""
    tok = train_bpe(TEXTS, 300, tmp_path / "model")
    torch.manual_seed(0)
    cfg = MiniMindConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                         num_key_value_heads=2)
    model = MiniMindForCausalLM(cfg)
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "full_sft_64.pth"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return path, tmp_path


def test_a_pth_opens_with_the_tokenizer_of_its_repository_and_answers(layout):
    path, _ = layout
    loaded = drain(chatcore.load_for_picker(str(path)))
    chat = loaded.model
    assert loaded.format == "PyTorch state dict" and loaded.parameters > 0
    assert "2 layers" in loaded.details["Architecture"]
    assert loaded.details["Template"] == "the model's own chat template"  # train_bpe writes one
    done = drain(chatcore.reply(chat, chatcore.prompt_messages([], "hi"),
                                SamplingSettings(max_new_tokens=5, temperature=0.0)))
    assert done.prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert done.stats.new_tokens >= 1 and done.context_used == len(chat.tokenizer.encode(done.prompt)) + \
        done.stats.new_tokens


def test_a_pth_without_a_tokenizer_says_where_to_put_one(layout):
    path, root = layout
    shutil.rmtree(root / "model")
    with pytest.raises(BadFileError, match="tokenizer.json"):
        drain(chatcore.load_for_picker(str(path)))


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path):
    tok = train_bpe(TEXTS, 300, tmp_path)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(vocab_size=tok.vocab_size - 10, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2))
    torch.save(model.state_dict(), tmp_path / "small.pth")
    with pytest.raises(BadFileError, match="not a pair"):
        drain(chatcore.load_for_picker(str(tmp_path / "small.pth")))
