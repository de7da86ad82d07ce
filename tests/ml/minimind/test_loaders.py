"""Opening MiniMind weights: every generation's .pth, Hugging Face folders, our own files, refusals.

No downloaded file is used. Each fixture is written here with the published key names and
shapes from a tiny config. The pre-250426 fixture is checked against a forward pass written
here from the old code's formulas (RoPE on complex numbers made of neighbouring elements),
so the row permutation that converts it to our rotate-half RoPE is tested, not assumed.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from playground.errors import BadFileError
from playground.ml import checkpoints
from playground.ml.minimind import loaders
from playground.ml.minimind.model import MiniMindConfig, MiniMindForCausalLM, parameter_count

TINY = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
            intermediate_size=48)
CONFIGS = {
    "minimind2": MiniMindConfig(**TINY),
    "minimind2-moe": MiniMindConfig(**{**TINY, "intermediate_size": 40}, use_moe=True, n_routed_experts=3,
                                    num_experts_per_tok=2, n_shared_experts=1),
    "minimind3": MiniMindConfig(**{**TINY, "head_dim": 6, "num_key_value_heads": 4}, generation="minimind3",
                                qk_norm=True, rms_norm_eps=1e-6),
    "minimind3-moe": MiniMindConfig(**{**TINY, "head_dim": 6, "num_key_value_heads": 4}, generation="minimind3",
                                    qk_norm=True, rms_norm_eps=1e-6, use_moe=True, n_routed_experts=3,
                                    num_experts_per_tok=1, n_shared_experts=0, aux_loss_alpha=5e-4, seq_aux=False),
}


def random_model(config: MiniMindConfig, seed: int = 0) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(config)
    model.init_weights(std=0.2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())   # exactly representable in fp16, as the released files are
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[5, 17, 3, 44, 9, 60, 2, 1]])


# -- .pth with the published names ------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("half", [True, False])
def test_a_pth_of_each_generation_loads_strictly_with_its_sizes_read_off_the_shapes(tmp_path, kind, half):
    cfg = CONFIGS[kind]
    model = random_model(cfg)
    sd = {k: (v.half() if half else v).clone() for k, v in model.state_dict().items()}   # both tied copies
    assert "lm_head.weight" in sd
    path = tmp_path / "full_sft_32.pth"
    torch.save(sd, path)
    found = loaders.load_minimind(path)
    got = found.config
    assert (got.generation, got.hidden_size, got.num_hidden_layers, got.num_key_value_heads, got.head_dim,
            got.intermediate_size, got.use_moe, got.qk_norm, got.tie_word_embeddings) == \
        (cfg.generation, 32, 2, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size, cfg.use_moe,
         cfg.qk_norm, True)
    if cfg.use_moe:
        assert (got.n_routed_experts, got.n_shared_experts, got.num_experts_per_tok) == \
            (cfg.n_routed_experts, cfg.n_shared_experts, cfg.num_experts_per_tok)
    assert found.format == loaders.FORMAT_PTH and found.generation == cfg.generation
    assert not found.model.training and found.model.lm_head.weight is found.model.model.embed_tokens.weight
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)
    assert found.name == "full_sft_32" and found.path == path
    assert found.description.startswith("full_sft_32 · 0.0 M parameters · 2 layers · hidden 32 · GQA")


def test_the_description_names_the_released_model(tmp_path):
    with torch.device("meta"):
        model = MiniMindForCausalLM(loaders.PRESETS["MiniMind2-Small"])
    cfg = model.config
    assert loaders.matching_preset(cfg) == "MiniMind2-Small"
    assert loaders.describe(cfg, parameter_count(model), "MiniMind2-Small") == \
        "MiniMind2-Small · 25.8 M parameters · 8 layers · hidden 512 · GQA 8/2 · dense"
    moe = loaders.PRESETS["MiniMind2-MoE"]
    assert loaders.describe(moe, 145_029_760, "MiniMind2-MoE").endswith("· GQA 8/2 · MoE 4 experts + 1 shared, top-2")
    assert loaders.matching_preset(loaders.PRESETS["minimind-3-moe"]) == "minimind-3-moe"


def test_an_untied_pth_keeps_its_own_head(tmp_path):
    model = random_model(MiniMindConfig(**TINY, tie_word_embeddings=False))
    torch.save(model.state_dict(), tmp_path / "r1.pth")
    found = loaders.load_minimind(tmp_path / "r1.pth")
    assert not found.config.tie_word_embeddings
    assert found.parameters == parameter_count(model)
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)


def test_a_training_checkpoint_with_the_model_inside_loads(tmp_path):
    model = random_model(CONFIGS["minimind2"])
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.95), "params": [0]}]}   # as AdamW's looks
    torch.save({"model": model.state_dict(), "optimizer": optimizer, "epoch": 1, "step": 300},
               tmp_path / "pretrain_32_resume.pth")
    found = loaders.load_minimind(tmp_path / "pretrain_32_resume.pth")
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)


def test_a_pth_with_a_wrong_shape_or_a_missing_layer_is_refused_in_one_sentence(tmp_path):
    sd = dict(random_model(MiniMindConfig(**{**TINY, "num_hidden_layers": 4})).state_dict())
    bad = dict(sd)
    bad["model.layers.2.mlp.up_proj.weight"] = torch.zeros(40, 32)
    torch.save(bad, tmp_path / "bad_shape.pth")
    with pytest.raises(BadFileError) as info:
        loaders.load_minimind(tmp_path / "bad_shape.pth")
    assert str(info.value) == ("bad_shape.pth: model.layers.2.mlp.up_proj.weight is 40x32 in the file but 48x32 in "
                               "the model its other weights describe.")
    gap = {k: v for k, v in sd.items() if not k.startswith("model.layers.2.")}
    torch.save(gap, tmp_path / "gap.pth")
    with pytest.raises(BadFileError) as info:
        loaders.load_minimind(tmp_path / "gap.pth")
    assert str(info.value) == ("gap.pth has no model.layers.2.self_attn.q_proj.weight, which a model of its other "
                               "weights' sizes needs.")
    no_up = {k: v for k, v in sd.items() if k != "model.layers.3.mlp.up_proj.weight"}
    torch.save(no_up, tmp_path / "no_up.pth")
    with pytest.raises(BadFileError, match=r"no model\.layers\.3\.mlp\.up_proj\.weight"):
        loaders.load_minimind(tmp_path / "no_up.pth")
    extra = {**sd, "model.layers.1.mlp.extra.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(BadFileError, match=r"holds model\.layers\.1\.mlp\.extra\.weight, which the model"):
        loaders.load_minimind(tmp_path / "extra.pth")
    torch.save(sd, tmp_path / "four_layers.pth")
    with pytest.raises(BadFileError) as info:
        loaders.load_minimind(tmp_path / "four_layers.pth", preset_name="MiniMind2-Small")
    assert str(info.value) == ("four_layers.pth has 4 layers and hidden size 32 (dense) but MiniMind2-Small has 8 "
                               "layers and hidden size 512 (dense).")
    assert "\n" not in str(info.value)


def test_other_files_are_refused_clearly(tmp_path):
    lora = {"model.layers.0.self_attn.q_proj.lora.A.weight": torch.zeros(16, 32)}
    torch.save(lora, tmp_path / "lora_identity_512.pth")
    with pytest.raises(BadFileError, match="is a LoRA adapter"):
        loaders.load_minimind(tmp_path / "lora_identity_512.pth")
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(BadFileError, match="is not a MiniMind state dict: it has no model.embed_tokens.weight"):
        loaders.load_minimind(tmp_path / "other.pth")
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(BadFileError, match="GGUF"):
        loaders.load_minimind(tmp_path / "model.gguf")
    (tmp_path / "notes.txt").write_text("hello, this is not a model")
    with pytest.raises(BadFileError, match="neither a PyTorch file"):
        loaders.load_minimind(tmp_path / "notes.txt")
    (tmp_path / "out").mkdir()
    with pytest.raises(BadFileError, match="folder without config.json"):
        loaders.load_minimind(tmp_path / "out")


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    sd = dict(random_model(CONFIGS["minimind2"]).state_dict())
    sd["model.norm.weight"] = _RunsCode(marker)
    torch.save(sd, tmp_path / "evil.pth")
    with pytest.raises(BadFileError, match="not allowed"):
        loaders.load_minimind(tmp_path / "evil.pth")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(minimind_hf_config(CONFIGS["minimind2"])))
    torch.save({"x": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(BadFileError, match="not allowed"):
        loaders.load_minimind(folder)
    assert not marker.exists()


# -- before 2025-04-26: other names, interleaved RoPE ------------------------------------------------
def legacy_state_dict(dim, layers, heads, kv, hidden, vocab, moe=False, experts=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, mean=0.0: (torch.randn(*s, generator=g) * 0.2 + mean).half().float()   # fp16-exact
    d = dim // heads
    sd = {"tok_embeddings.weight": r(vocab, dim), "norm.weight": r(dim, mean=1.0)}
    sd["output.weight"] = sd["tok_embeddings.weight"]
    for i in range(layers):
        p = f"layers.{i}."
        sd.update({p + "attention.wq.weight": r(heads * d, dim), p + "attention.wk.weight": r(kv * d, dim),
                   p + "attention.wv.weight": r(kv * d, dim), p + "attention.wo.weight": r(dim, heads * d),
                   p + "attention_norm.weight": r(dim, mean=1.0), p + "ffn_norm.weight": r(dim, mean=1.0)})
        ffn = lambda q: {q + "w1.weight": r(hidden, dim), q + "w2.weight": r(dim, hidden),
                         q + "w3.weight": r(hidden, dim)}
        if moe:
            sd[p + "feed_forward.gate.weight"] = r(experts, dim)
            for e in range(experts):
                sd.update(ffn(p + f"feed_forward.experts.{e}."))
            sd.update(ffn(p + "feed_forward.shared_experts."))
        else:
            sd.update(ffn(p + "feed_forward."))
    return sd


def legacy_forward(sd, ids, heads, kv, theta, eps=1e-5, top_k=2):
    """The pre-250426 MiniMind forward from its formulas: RoPE on complex pairs (x0, x1), (x2, x3), ..."""
    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def ffn(x, q):
        gate, up = F.linear(x, sd[q + "w1.weight"]), F.linear(x, sd[q + "w3.weight"])
        return F.linear(F.silu(gate) * up, sd[q + "w2.weight"])

    x = sd["tok_embeddings.weight"][ids]
    B, T, dim = x.shape
    d = dim // heads
    freqs = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    pos_cis = torch.polar(torch.ones(T, d // 2), torch.outer(torch.arange(T).float(), freqs))   # [T, d/2]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    for i in range(layers):
        p = f"layers.{i}."
        h = rms(x, sd[p + "attention_norm.weight"])
        q = F.linear(h, sd[p + "attention.wq.weight"]).view(B, T, heads, d)
        k = F.linear(h, sd[p + "attention.wk.weight"]).view(B, T, kv, d)
        v = F.linear(h, sd[p + "attention.wv.weight"]).view(B, T, kv, d)
        rot = lambda t: torch.view_as_real(torch.view_as_complex(t.reshape(B, T, -1, d // 2, 2))
                                           * pos_cis[None, :, None]).flatten(3)
        q, k = rot(q), rot(k)
        k, v = k.repeat_interleave(heads // kv, dim=2), v.repeat_interleave(heads // kv, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, dim)
        x = x + F.linear(att, sd[p + "attention.wo.weight"])
        h = rms(x, sd[p + "ffn_norm.weight"])
        if p + "feed_forward.gate.weight" in sd:
            probs = F.linear(h, sd[p + "feed_forward.gate.weight"]).softmax(-1)
            w, e = probs.topk(top_k, dim=-1)
            w = w / w.sum(-1, keepdim=True)
            out = ffn(h, p + "feed_forward.shared_experts.")
            for j in range(probs.shape[-1]):
                weight = (w * (e == j)).sum(-1, keepdim=True)
                out = out + weight * ffn(h, p + f"feed_forward.experts.{j}.")
        else:
            out = ffn(h, p + "feed_forward.")
        x = x + out
    return F.linear(rms(x, sd["norm.weight"]), sd["output.weight"])


@pytest.mark.parametrize("variant", [
    dict(heads=16, kv=8, theta=1e4, moe=False, gen="v1"),            # MiniMind v1 (2024)
    dict(heads=8, kv=2, theta=1e6, moe=False, gen="2025-02"),         # the first MiniMind2
    dict(heads=8, kv=2, theta=1e6, moe=True, gen="2025-02 MoE"),
])
def test_a_pre_250426_pth_is_renamed_and_its_interleaved_rope_converted(tmp_path, variant):
    dim = 64
    sd = legacy_state_dict(dim, 2, variant["heads"], variant["kv"], 96, 97, moe=variant["moe"])
    torch.save({k: v.half() for k, v in sd.items()}, tmp_path / "full_sft_64.pth")
    found = loaders.load_minimind(tmp_path / "full_sft_64.pth")
    cfg = found.config
    assert found.format == loaders.FORMAT_LEGACY and found.generation == "legacy"
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.rope_theta, cfg.use_moe) == \
        (variant["heads"], variant["kv"], variant["theta"], variant["moe"])
    want = legacy_forward(sd, IDS, variant["heads"], variant["kv"], variant["theta"])
    assert torch.allclose(logits(found.model, IDS), want, atol=1e-4)
    # without the permutation the renamed weights compute something else
    renamed = {loaders.legacy_key(k): v for k, v in sd.items()}
    plain = loaders.build_and_load(cfg, renamed, "renamed only")
    assert not torch.allclose(logits(plain, IDS), want, atol=1e-2)


def test_the_rope_permutation_is_a_per_head_reordering_and_its_inverse_undoes_it():
    w = torch.arange(2 * 6 * 3, dtype=torch.float32).view(12, 3)
    half = loaders.interleaved_to_half(w, 6)
    assert half[:6, 0].tolist() == w[[0, 2, 4, 1, 3, 5], 0].tolist()
    assert half[6:, 0].tolist() == w[[6, 8, 10, 7, 9, 11], 0].tolist()
    assert torch.equal(loaders.half_to_interleaved(half, 6), w)


# -- Hugging Face folders -------------------------------------------------------------------------------
def minimind_hf_config(cfg: MiniMindConfig) -> dict:
    """config.json as MiniMind's own HF export writes it (custom code named in auto_map)."""
    return {"architectures": ["MiniMindForCausalLM"], "model_type": "minimind",
            "auto_map": {"AutoConfig": "model_minimind.MiniMindConfig",
                         "AutoModelForCausalLM": "model_minimind.MiniMindForCausalLM"},
            "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
            "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size, "rope_theta": 1e6,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 32768, "hidden_act": "silu", "use_moe": cfg.use_moe,
            "n_routed_experts": cfg.n_routed_experts, "num_experts_per_tok": cfg.num_experts_per_tok,
            "n_shared_experts": cfg.n_shared_experts, "scoring_func": "softmax", "aux_loss_alpha": 0.1,
            "seq_aux": True, "norm_topk_prob": True, "flash_attn": True, "dropout": 0.0, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "float16"}


def test_a_llama_folder_with_an_untied_head_loads_with_its_tokenizer(tmp_path):
    cfg = MiniMindConfig(**TINY, tie_word_embeddings=False)
    model = random_model(cfg)
    folder = tmp_path / "MiniMind2-Small"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 4,
        "vocab_size": 97, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "rope_scaling": None, "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}))
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    found = loaders.load_minimind(folder)
    assert found.format == "Hugging Face folder (LlamaForCausalLM)" and found.generation == "minimind2"
    assert not found.config.tie_word_embeddings and found.config.max_position_embeddings == 8192
    assert found.parameters == parameter_count(model)
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)
    assert found.tokenizer_dir == folder and found.tokenizer_path == folder / "tokenizer.json"
    assert loaders.load_minimind(folder / "model.safetensors").format == found.format   # its weights picked
    assert loaders.load_minimind(folder / "config.json").path == folder


@pytest.mark.parametrize("kind, fused_experts", [("minimind3", False), ("minimind3-moe", False),
                                                  ("minimind3-moe", True)])
def test_a_qwen3_folder_loads_as_minimind_3(tmp_path, kind, fused_experts):
    cfg = CONFIGS[kind]
    model = random_model(cfg)
    sd = {k: v.half() for k, v in model.state_dict().items() if k != "lm_head.weight"}   # tied: saved once
    if fused_experts:   # transformers 5: gate_up_proj [E, 2I, h], down_proj [E, h, I]
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}.mlp.experts"
            E = cfg.n_routed_experts
            gate = torch.stack([sd.pop(f"{p}.{e}.gate_proj.weight") for e in range(E)])
            up = torch.stack([sd.pop(f"{p}.{e}.up_proj.weight") for e in range(E)])
            sd[f"{p}.gate_up_proj"] = torch.cat([gate, up], dim=1)
            sd[f"{p}.down_proj"] = torch.stack([sd.pop(f"{p}.{e}.down_proj.weight") for e in range(E)])
    arch = "Qwen3MoeForCausalLM" if cfg.use_moe else "Qwen3ForCausalLM"
    config = {"architectures": [arch], "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 6, "vocab_size": 97,
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1e6, "rope_scaling": None,
              "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None,
              "attention_bias": False, "hidden_act": "silu"}
    if cfg.use_moe:
        config.update(num_experts=3, num_experts_per_tok=1, moe_intermediate_size=48, norm_topk_prob=True,
                      decoder_sparse_step=1, mlp_only_layers=[], router_aux_loss_coef=5e-4)
    folder = tmp_path / "minimind-3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    found = loaders.load_minimind(folder)
    assert found.generation == "minimind3" and found.config.qk_norm and found.config.tie_word_embeddings
    assert found.format == f"Hugging Face folder ({arch})"
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)


def test_minimind_custom_code_folders_load_with_our_code_and_never_run_theirs(tmp_path):
    marker = tmp_path / "their_code_ran"
    cfg = CONFIGS["minimind2-moe"]
    model = random_model(cfg)
    folder = tmp_path / "MiniMind2-MoE"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(minimind_hf_config(cfg)))
    (folder / "model_minimind.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    found = loaders.load_minimind(folder)
    assert found.format == "Hugging Face folder (MiniMindForCausalLM)"
    assert found.config.use_moe and found.config.n_shared_experts == 1
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-5)
    assert not marker.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["FancyForCausalLM"],
                                                   "auto_map": {"AutoModelForCausalLM": "fancy.Fancy"}}))
    torch.save({}, other / "pytorch_model.bin")
    with pytest.raises(BadFileError, match="FancyForCausalLM .it names its own Python code in auto_map, which this "
                                           "app never runs.; only MiniMind's architectures"):
        loaders.load_minimind(other)


def test_a_minimindlm_folder_from_february_2025_loads_through_the_legacy_path(tmp_path):
    sd = legacy_state_dict(64, 2, 8, 2, 96, 97)
    folder = tmp_path / "MiniMind2-Small"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["MiniMindLM"], "auto_map": {"AutoModelForCausalLM": "model.MiniMindLM"}, "dim": 64,
        "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 97, "hidden_dim": 96, "norm_eps": 1e-5,
        "max_seq_len": 8192, "rope_theta": 1e6, "use_moe": False}))
    torch.save(sd, folder / "pytorch_model.bin")
    found = loaders.load_minimind(folder)
    assert found.generation == "legacy"
    assert torch.allclose(logits(found.model, IDS), legacy_forward(sd, IDS, 8, 2, 1e6), atol=1e-4)


def test_a_sharded_index_may_only_name_files_in_its_folder(tmp_path):
    model = random_model(CONFIGS["minimind3"])
    folder = tmp_path / "sharded"
    folder.mkdir()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    keys = sorted(sd)
    save_file({k: sd[k] for k in keys[:10]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[10:]}, str(folder / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"model-0000{1 if i < 10 else 2}-of-00002.safetensors" for i, k in enumerate(keys)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 6, "vocab_size": 97,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": True}))
    assert torch.allclose(logits(loaders.load_minimind(folder).model, IDS), logits(model, IDS), atol=1e-5)
    index["weight_map"][keys[0]] = "../../etc/passwd"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(BadFileError, match="not a file in the folder"):
        loaders.load_minimind(folder)


# -- our own files -----------------------------------------------------------------------------------
def test_our_own_files_round_trip_with_their_sidecar(tmp_path):
    model = random_model(CONFIGS["minimind3-moe"])
    path = loaders.save_minimind(tmp_path / "dpo.safetensors", model,
                                 {"stage": "dpo", "held_out_perplexity": 12.5, "command": "train all"})
    header = checkpoints.read_safetensors_header(path)
    assert "lm_head.weight" not in header and "model.embed_tokens.weight" in header   # tied: stored once
    side = checkpoints.read_sidecar(path)
    assert side["kind"] == "minimind" and side["config"]["generation"] == "minimind3"
    found = loaders.load_minimind(path)
    assert found.format == loaders.FORMAT_OURS and found.sidecar["held_out_perplexity"] == 12.5
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-6)
    assert loaders.load_minimind(tmp_path / "dpo.json").format == loaders.FORMAT_OURS   # the sidecar picked
    with pytest.raises(ValueError, match="written by save_minimind"):
        loaders.save_minimind(tmp_path / "x.safetensors", model, {"config": {}})
    untied = random_model(MiniMindConfig(**TINY, tie_word_embeddings=False))
    loaders.save_minimind(tmp_path / "untied.safetensors", untied)
    assert torch.allclose(logits(loaders.load_minimind(tmp_path / "untied.safetensors").model, IDS),
                          logits(untied, IDS), atol=1e-6)


def test_a_bare_safetensors_state_dict_loads_and_a_foreign_sidecar_is_refused(tmp_path):
    model = random_model(CONFIGS["minimind2"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "weights.safetensors"))
    found = loaders.load_minimind(tmp_path / "weights.safetensors")
    assert found.format == loaders.FORMAT_SAFETENSORS
    assert torch.allclose(logits(found.model, IDS), logits(model, IDS), atol=1e-6)
    checkpoints.save_weights(tmp_path / "sep.safetensors", {"w": torch.zeros(2)}, {"kind": "conv-tasnet"})
    with pytest.raises(BadFileError, match="this app's 'conv-tasnet' file, not a MiniMind model"):
        loaders.load_minimind(tmp_path / "sep.safetensors")


def test_the_tokenizer_is_looked_for_beside_the_file_and_in_a_model_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    (tmp_path / "model" / "tokenizer_config.json").write_text("{}")
    torch.save(random_model(CONFIGS["minimind2"]).state_dict(), tmp_path / "out" / "full_sft_32.pth")
    found = loaders.load_minimind(tmp_path / "out" / "full_sft_32.pth")
    assert found.tokenizer_dir == tmp_path / "model"
    assert found.tokenizer_path == tmp_path / "model" / "tokenizer.json"
    lonely = tmp_path / "elsewhere" / "lonely"
    lonely.mkdir(parents=True)
    torch.save(random_model(CONFIGS["minimind2"]).state_dict(), lonely / "full_sft_32.pth")
    assert loaders.find_tokenizer(lonely / "full_sft_32.pth") is None
