"""MiniMind: the released sizes, the published weight names, RoPE, GQA, MoE routing, the cache.

The attention, the MoE layer and the RoPE rotation are checked against short reference
implementations written here from the formulas (repeated key/value heads and an explicit
masked softmax; a per-token loop over the chosen experts; rotate-half).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from playground.errors import UserError
from playground.ml.minimind.model import (
    PRESETS,
    KVCache,
    MiniMindConfig,
    MiniMindForCausalLM,
    MoEFeedForward,
    RMSNorm,
    apply_rope,
    apply_rope_rolled,
    balance_loss,
    minimind2_intermediate_size,
    minimind3_intermediate_size,
    parameter_count,
    preset,
    rope_frequencies,
    rope_table,
    signed_sin,
)

TINY = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, moe_intermediate_size=40)
GENERATIONS = {
    "minimind2": MiniMindConfig(**TINY),
    "minimind2-moe": MiniMindConfig(**TINY, use_moe=True, n_routed_experts=3, num_experts_per_tok=2,
                                    n_shared_experts=1),
    "minimind3": MiniMindConfig(**{**TINY, "head_dim": 12}, generation="minimind3", qk_norm=True, rms_norm_eps=1e-6),
    "minimind3-moe": MiniMindConfig(**{**TINY, "head_dim": 12}, generation="minimind3", qk_norm=True, use_moe=True,
                                    n_routed_experts=3, num_experts_per_tok=1, n_shared_experts=0, seq_aux=False),
}


def tiny_model(kind: str = "minimind2", seed: int = 0, dtype=torch.float32) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(GENERATIONS[kind])
    model.init_weights(std=0.2)   # larger than training's 0.02, so that logits differ clearly
    return model.to(dtype).eval()


@pytest.mark.parametrize("name, count", [
    ("MiniMind2-Small", 25_829_888), ("MiniMind2", 104_030_976), ("MiniMind2-MoE", 145_029_760),
    ("minimind-3", 63_912_192), ("minimind-3-moe", 198_416_640),
])
def test_the_presets_have_the_released_parameter_counts(name, count):
    with torch.device("meta"):
        model = MiniMindForCausalLM(preset(name))
    assert parameter_count(model) == count


def test_the_derived_sizes_follow_minimind():
    assert [minimind2_intermediate_size(h) for h in (512, 640, 768)] == [1408, 1728, 2048]
    assert minimind3_intermediate_size(768) == 2432
    assert PRESETS["MiniMind2"].head_dim == 96 and PRESETS["minimind-3"].head_dim == 96
    assert MiniMindConfig(hidden_size=640).intermediate_size == 1728
    assert MiniMindConfig(hidden_size=768, generation="minimind3").intermediate_size == 2432
    assert preset("MiniMind2-Small", hidden_size=64, num_attention_heads=4).head_dim == 16


def test_the_parameter_names_are_the_published_state_dict_keys():
    with torch.device("meta"):
        small = MiniMindForCausalLM(preset("MiniMind2-Small")).state_dict()
        moe = MiniMindForCausalLM(preset("MiniMind2-MoE")).state_dict()
        three = MiniMindForCausalLM(preset("minimind-3")).state_dict()
        three_moe = MiniMindForCausalLM(preset("minimind-3-moe")).state_dict()
    layer = [f"model.layers.0.{k}.weight" for k in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")]
    assert set(small) == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | {
        k.replace("layers.0.", f"layers.{i}.") for i in range(8) for k in layer}
    assert small["model.layers.0.self_attn.k_proj.weight"].shape == (128, 512)
    assert "model.layers.7.mlp.shared_experts.0.up_proj.weight" in moe and "model.layers.0.mlp.gate.weight" in moe
    assert "model.layers.0.mlp.experts.3.down_proj.weight" in moe
    assert three["model.layers.0.self_attn.q_norm.weight"].shape == (96,)
    assert three["model.layers.0.self_attn.k_proj.weight"].shape == (384, 768)
    assert not any("shared_experts" in k for k in three_moe)
    assert three_moe["model.layers.0.mlp.gate.weight"].shape == (4, 768)
    assert not any("bias" in k for k in small)


def test_tied_embeddings_are_one_tensor_and_load_from_files_that_store_both():
    model = tiny_model()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in sd and "model.embed_tokens.weight" in sd
    fresh = MiniMindForCausalLM(GENERATIONS["minimind2"])
    fresh.load_state_dict(sd, strict=True)
    ids = torch.randint(0, 97, (1, 5))
    assert torch.allclose(fresh.eval()(ids).logits, model(ids).logits)
    untied = MiniMindForCausalLM(MiniMindConfig(**TINY, tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert parameter_count(untied) == parameter_count(model) + 97 * 32


def test_rmsnorm_is_computed_in_float32_and_cast_back():
    norm = RMSNorm(8, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 8))
    x = torch.randn(3, 8) * 100
    want = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert torch.allclose(norm(x), want, atol=1e-5)
    half = x.half()
    out = norm(half)
    assert out.dtype == torch.float16
    xf = half.float()
    exact = (norm.weight * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).half()
    assert torch.equal(out, exact)


def test_rope_rotates_pairs_i_and_i_plus_half_and_scores_depend_on_relative_position():
    cfg = MiniMindConfig(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, rope_theta=1e4)
    cos, sin = rope_table(cfg, 40)
    d = cfg.head_dim
    assert cos.shape == (40, d)
    freqs = rope_frequencies(cfg)
    assert torch.allclose(freqs.float(), 1e4 ** (-torch.arange(0, d, 2).float() / d))
    x = torch.randn(40, d)
    rotated = apply_rope(x, cos, sin)
    # plane i is (x_i, x_{i+d/2}), turned by pos * freq_i
    pos, i = 7, 3
    angle = pos * freqs[i].item()
    a, b = x[pos, i].item(), x[pos, i + d // 2].item()
    assert rotated[pos, i].item() == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-5)
    assert rotated[pos, i + d // 2].item() == pytest.approx(b * math.cos(angle) + a * math.sin(angle), abs=1e-5)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    assert torch.allclose(apply_rope_rolled(x, cos, signed_sin(sin)), rotated, atol=1e-6)
    q, k = torch.randn(d), torch.randn(d)
    qs, ks = apply_rope(q.expand(40, d), cos, sin), apply_rope(k.expand(40, d), cos, sin)
    assert (qs[10] @ ks[7]).item() == pytest.approx((qs[33] @ ks[30]).item(), abs=1e-4)


def test_yarn_slows_only_the_slow_planes():
    plain = MiniMindConfig(hidden_size=64, num_attention_heads=1, num_key_value_heads=1)
    yarn = MiniMindConfig(hidden_size=64, num_attention_heads=1, num_key_value_heads=1,
                          rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 2048,
                                        "beta_fast": 32, "beta_slow": 1, "attention_factor": 1.0})
    f0, f1 = rope_frequencies(plain), rope_frequencies(yarn)
    assert f1[0] == f0[0]                              # the fastest plane is kept
    assert f1[-1] == pytest.approx(f0[-1] / 16)        # the slowest is slowed by the factor
    assert torch.all(f1 <= f0)


def reference_attention(attn, x, cos, sin):
    """The attention block from its formulas: repeated K/V heads, an explicit causal softmax."""
    B, T, _ = x.shape
    H, K, d = attn.n_heads, attn.n_kv, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, d)
    k = attn.k_proj(x).view(B, T, K, d)
    v = attn.v_proj(x).view(B, T, K, d)
    if attn.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = apply_rope(q.transpose(1, 2), cos, sin)
    k = apply_rope(k.transpose(1, 2), cos, sin).repeat_interleave(H // K, dim=1)
    v = v.transpose(1, 2).repeat_interleave(H // K, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    probs = scores.softmax(-1)
    out = (probs @ v).transpose(1, 2).reshape(B, T, H * d)
    return attn.o_proj(out), probs


def reference_forward(model, ids):
    """The whole network written out, with reference_attention and a per-token MoE loop."""
    cfg = model.config
    cos, sin = rope_table(cfg, ids.shape[1])
    x = model.model.embed_tokens(ids)
    probs_per_layer = []
    for block in model.model.layers:
        a, probs = reference_attention(block.self_attn, block.input_layernorm(x), cos, sin)
        probs_per_layer.append(probs)
        h = x + a
        y = block.post_attention_layernorm(h)
        if cfg.use_moe:
            out = torch.zeros_like(y)
            for b in range(y.shape[0]):
                for t in range(y.shape[1]):
                    p = (y[b, t] @ block.mlp.gate.weight.T).softmax(-1)
                    w, e = p.topk(cfg.num_experts_per_tok)
                    if cfg.norm_topk_prob and (cfg.num_experts_per_tok > 1 or cfg.generation == "minimind3"):
                        w = w / w.sum()
                    for wi, ei in zip(w, e):
                        out[b, t] += wi * block.mlp.experts[int(ei)](y[b, t][None])[0]
                    for shared in block.mlp.shared_experts or []:
                        out[b, t] += shared(y[b, t][None])[0]
        else:
            out = block.mlp(y)
        x = h + out
    return model.lm_head(model.model.norm(x)), probs_per_layer


@pytest.mark.parametrize("kind", list(GENERATIONS))
def test_the_forward_pass_matches_the_formulas(kind):
    model = tiny_model(kind)
    ids = torch.randint(0, 97, (2, 9))
    want, probs = reference_forward(model, ids)
    out = model(ids, attention_layers="all")
    assert out.logits.shape == (2, 9, 97)
    assert torch.allclose(out.logits, want, atol=1e-4)
    for layer, p in out.attention.items():
        assert p.shape == (2, model.config.num_attention_heads, 9)
        assert torch.allclose(p, probs[layer][:, :, -1], atol=1e-5)
    with torch.no_grad():   # the inference path (fused q/k/v and gate/up products) gives the same numbers
        assert torch.allclose(model(ids).logits, want, atol=1e-4)


@pytest.mark.parametrize("kind", list(GENERATIONS))
def test_decoding_with_the_cache_gives_the_logits_of_the_whole_sequence(kind):
    model = tiny_model(kind, dtype=torch.float64)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(capacity=3)                   # too small: it grows on the way
        parts = [model(ids[:, :5], cache), model(ids[:, 5:6], cache), model(ids[:, 6:9], cache),
                 model(ids[:, 9:10], cache, attention_layers=-1), model(ids[:, 10:], cache)]
    assert cache.length == 12 and cache.capacity >= 12
    assert torch.allclose(torch.cat([p.logits for p in parts], dim=1), full, atol=1e-10)
    assert parts[3].attention[1].shape == (2, model.config.num_attention_heads, 10)
    assert torch.allclose(parts[3].attention[1].sum(-1), torch.ones(2, model.config.num_attention_heads,
                                                                    dtype=torch.float32))
    k = cache.keys[0]
    assert k.shape[:2] == (2, model.config.num_key_value_heads) and k.shape[3] == model.config.head_dim
    assert torch.equal(cache.ids[:, :12], ids)
    assert cache.common_prefix(ids[0].tolist()[:7] + [0, 0]) == 7
    cache.truncate(7)
    with torch.no_grad():
        again = model(ids[:, 7:], cache).logits
    assert torch.allclose(again, full[:, 7:], atol=1e-10)
    with torch.no_grad():
        last = model(ids, last_only=True).logits
    assert last.shape == (2, 1, 97) and torch.allclose(last[:, 0], full[:, -1], atol=1e-10)


def test_moe_routing_weights_sum_to_one_and_the_aux_loss_is_for_training_only():
    model = tiny_model("minimind2-moe")
    mlp = model.model.layers[0].mlp
    assert isinstance(mlp, MoEFeedForward)
    x = torch.randn(50, 32)
    scores, weight, index = mlp.route(x)
    assert weight.shape == index.shape == (50, 2)
    assert torch.allclose(weight.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.allclose(scores.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.equal(index, scores.topk(2).indices)
    three = tiny_model("minimind3-moe").model.layers[0].mlp   # top-1, renormalised: weight 1
    assert torch.allclose(three.route(x)[1], torch.ones(50, 1))
    mm2_top1 = MoEFeedForward(MiniMindConfig(**TINY, use_moe=True, num_experts_per_tok=1))   # not renormalised
    s, w, _ = mm2_top1.route(x)
    assert torch.allclose(w[:, 0], s.max(-1).values)
    ids = torch.randint(0, 97, (2, 8))
    assert model(ids).aux_loss.item() == 0.0
    model.train()
    aux = model(ids).aux_loss
    assert aux.item() > 0 and aux.requires_grad
    assert tiny_model("minimind2").train()(ids).aux_loss.item() == 0.0


def test_the_balance_loss_is_one_when_routing_is_uniform_and_matches_switch_transformer():
    E, B, T = 4, 2, 8
    uniform = torch.full((B, T, E), 1 / E)
    chosen = torch.arange(B * T).remainder(E).view(B, T, 1)
    assert balance_loss(uniform, chosen, E, per_sequence=True).item() == pytest.approx(1.0)
    assert balance_loss(uniform, chosen, E, per_sequence=False).item() == pytest.approx(1.0)
    scores = torch.softmax(torch.randn(B, T, E), -1)
    chosen = scores.argmax(-1, keepdim=True)
    f = F.one_hot(chosen.view(-1), E).float().mean(0)
    want = E * (f * scores.view(-1, E).mean(0)).sum()
    assert balance_loss(scores, chosen, E, per_sequence=False).item() == pytest.approx(want.item(), rel=1e-6)
    collapsed = torch.zeros(B, T, E)
    collapsed[..., 0] = 1
    assert balance_loss(collapsed, torch.zeros(B, T, 1, dtype=torch.long), E, True).item() == pytest.approx(E)


def test_training_reaches_every_weight_and_the_inference_path_follows_the_updates():
    model = tiny_model("minimind3").train()
    ids = torch.randint(0, 97, (2, 10))
    with torch.inference_mode():              # as generation runs: prepares its weights (gate/up stacked,
        model.eval()(ids)                     # the parameters views of the stack: ordinary tensors, trainable)
    mlp = model.model.layers[0].mlp
    fused = mlp.__dict__["_fused"]
    assert mlp.up_proj.weight.data_ptr() == fused[mlp.gate_proj.weight.shape[0]:].data_ptr()
    model.train()
    logits = model(ids).logits
    F.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():                     # an optimizer's step: in place, seen by the version counters
        for p in model.parameters():
            p.sub_(0.05 * p.grad.sign())
    model.eval()
    with torch.no_grad():
        fast = model(ids).logits
    assert torch.allclose(fast, model(ids).logits, atol=1e-5)   # grad mode uses the parameters one by one
    double = model.double()                   # .to() gives the parameters new storage: prepared again, in float64
    with torch.no_grad():
        again = double(ids).logits
    assert again.dtype == torch.float64 and mlp.__dict__["_fused"].dtype == torch.float64
    assert mlp.gate_proj.weight.data_ptr() == mlp.__dict__["_fused"].data_ptr()
    assert torch.allclose(again.float(), fast, atol=1e-4)


def random_norms(model):
    """Norm weights away from one, so that folding them into the products is put to the test."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("kind", list(GENERATIONS))
def test_the_inference_path_gives_the_numbers_of_the_modules(kind):
    model = random_norms(tiny_model(kind))
    ids = torch.randint(0, 97, (2, 9))
    want = model(ids, attention_layers="all")           # grad mode: the modules, one product per weight
    with torch.no_grad():
        got = model(ids, attention_layers="all")
        assert torch.allclose(got.logits, want.logits.detach(), atol=1e-5)
        for layer, probs in want.attention.items():
            assert torch.allclose(got.attention[layer], probs, atol=1e-6)
        one = model(ids[:1, :1]).logits                 # one token, no cache (the single-token step)
        assert torch.allclose(one, want.logits[:1, :1].detach(), atol=1e-5)
        cache = KVCache()
        model(ids[:1, :4], cache)
        steps = [model(ids[:1, t:t + 1], cache, attention_layers=-1) for t in range(4, 9)]
        assert torch.allclose(torch.cat([s.logits for s in steps], 1), want.logits[:1, 4:].detach(), atol=1e-5)
        assert torch.allclose(steps[-1].attention[1], want.attention[1][:1], atol=1e-6)
        batch = KVCache()                               # two sequences, one token each: the general path
        model(ids[:, :8], batch)
        assert torch.allclose(model(ids[:, 8:], batch).logits, want.logits[:, 8:].detach(), atol=1e-5)


def test_a_cache_filled_with_gradients_on_is_read_the_same_without():
    model = random_norms(tiny_model("minimind3"))
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        full = model(ids).logits
    cache = KVCache()
    model(ids[:, :5], cache)                            # the modules write the keys in the cache's order too
    with torch.no_grad():
        rest = torch.cat([model(ids[:, t:t + 1], cache).logits for t in range(5, 8)], 1)
    assert torch.allclose(rest, full[:, 5:], atol=1e-5)


def test_the_inference_path_sees_every_kind_of_weight_change():
    model = random_norms(tiny_model())
    ids = torch.randint(0, 97, (1, 6))

    def check():
        with torch.no_grad():
            fast = model(ids).logits
        assert torch.allclose(fast, model(ids).logits.detach(), atol=1e-5)

    check()
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight.mul_(1.5)                    # in place (an optimizer's step)
        model.model.layers[1].input_layernorm.weight.add_(0.25)
    check()
    attn.k_proj.weight.data = attn.k_proj.weight.data * -1   # new storage
    check()
    other = random_norms(tiny_model(seed=1))
    model.load_state_dict(other.state_dict())           # copied in place
    check()
    model.load_state_dict(random_norms(tiny_model(seed=2)).state_dict(), assign=True)   # new parameters
    check()
    model.lm_head.weight = torch.nn.Parameter(torch.randn(97, 32))   # a parameter replaced
    check()


def test_half_precision_inference_follows_the_float32_arithmetic():
    model = random_norms(tiny_model("minimind3"))
    ids = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        want = model(ids).logits
        half = model.to(torch.bfloat16)
        got = half(ids).logits
        cache = KVCache()
        half(ids[:, :6], cache)
        step = half(ids[:, 6:], cache).logits
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max()
    assert (step.float() - got[:, 6:].float()).abs().max() < 0.05 * want.abs().max()


def test_the_config_round_trips_and_refuses_bad_settings():
    cfg = preset("minimind-3-moe")
    assert MiniMindConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="Unknown MiniMind settings: colour"):
        MiniMindConfig.from_dict({**cfg.to_dict(), "colour": "blue"})
    with pytest.raises(UserError, match="wrong type"):
        MiniMindConfig.from_dict({**cfg.to_dict(), "hidden_size": "768"})
    with pytest.raises(UserError, match="shared evenly"):
        MiniMindForCausalLM(MiniMindConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=4))
    with pytest.raises(UserError, match="experts per token"):
        MiniMindConfig(use_moe=True, num_experts_per_tok=5).validate()
    with pytest.raises(UserError, match="no MiniMind preset"):
        preset("MiniMind9")
