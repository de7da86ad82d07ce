"""Generation: the cache changes nothing, the sampling rules keep the right tokens, seeds repeat,
the stream stops when asked; and scoring text (log-probabilities, perplexity)."""

from __future__ import annotations

import math

import pytest
import torch

from playground.ml.minimind.generate import (
    GenerationStats,
    SamplingSettings,
    apply_repetition_penalty,
    candidate_distribution,
    filter_logits,
    generate,
    perplexity,
    stream,
    token_logprobs,
)
from playground.ml.minimind.model import KVCache, MiniMindConfig, MiniMindForCausalLM

TINY = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48)


def tiny_model(seed=0, **kw) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(MiniMindConfig(**{**TINY, **kw}))
    model.init_weights(std=0.3)
    return model.double().eval()   # float64: no near-ties between the cached and the full computation


def greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("kw", [{}, dict(use_moe=True, n_routed_experts=3, num_experts_per_tok=2),
                                dict(generation="minimind3", qk_norm=True, head_dim=12)])
def test_greedy_generation_with_the_cache_equals_recomputing_everything(kw):
    model = tiny_model(**kw)
    prompt = [5, 17, 3, 44, 9]
    settings = SamplingSettings(max_new_tokens=15, temperature=0, stop_ids=())
    assert generate(model, prompt, settings) == greedy_without_cache(model, prompt, 15)


def test_top_k_and_top_p_keep_the_right_sets():
    probs = torch.tensor([0.05, 0.4, 0.1, 0.25, 0.2])
    logits = probs.log()
    ids, p = candidate_distribution(logits, 1.0, top_k=3)
    assert ids.tolist() == [1, 3, 4]
    assert torch.allclose(p, torch.tensor([0.4, 0.25, 0.2]) / 0.85)
    # top-p: the smallest set of the most likely tokens whose probabilities reach p
    assert candidate_distribution(logits, 1.0, top_p=0.3)[0].tolist() == [1]
    assert candidate_distribution(logits, 1.0, top_p=0.6)[0].tolist() == [1, 3]
    assert candidate_distribution(logits, 1.0, top_p=0.7)[0].tolist() == [1, 3, 4]
    assert candidate_distribution(logits, 1.0, top_p=0.9)[0].tolist() == [1, 3, 4, 2]
    assert candidate_distribution(logits, 1.0, top_k=2, top_p=0.99)[0].tolist() == [1, 3]
    ids, p = candidate_distribution(logits, 1.0, top_p=0.6)
    assert p.sum().item() == pytest.approx(1.0)
    kept = filter_logits(logits, top_k=2)
    assert torch.isinf(kept[[0, 2, 4]]).all() and torch.equal(kept[[1, 3]], logits[[1, 3]])
    # temperature: logits / T before the softmax
    _, hot = candidate_distribution(logits, 2.0)
    assert torch.allclose(hot, torch.sort((logits / 2).softmax(-1), descending=True).values)


def test_the_temperature_divides_the_logits_before_the_softmax():
    logits = torch.randn(40)
    for t in (0.5, 1.0, 2.0):
        for k in (7, 0):
            ids, p = candidate_distribution(logits, t, top_k=k)
            values, want = (logits / t).sort(descending=True)
            assert torch.equal(ids, want[:k or 40])
            assert torch.allclose(p, values[:k or 40].softmax(-1))
    assert torch.equal(candidate_distribution(logits, 0.0, top_k=5)[1], candidate_distribution(logits, 1.0, top_k=5)[1])


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([2.0, -2.0, 1.0, -1.0, 0.5])
    seen = torch.tensor([True, True, False, False, True])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, -1.0, 0.25]
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)


def test_the_repetition_penalty_counts_the_prompt_and_the_output():
    model = tiny_model()
    prompt = [3, 4, 5]
    plain = generate(model, prompt, SamplingSettings(max_new_tokens=20, temperature=0, stop_ids=()))
    strict = generate(model, prompt, SamplingSettings(max_new_tokens=20, temperature=0, stop_ids=(),
                                                      repetition_penalty=1e6))
    assert len(set(strict)) == 20 and not set(strict) & set(prompt)   # nothing seen is ever chosen again
    assert plain != strict


def test_a_seed_gives_the_same_sample_twice():
    model = tiny_model()
    settings = SamplingSettings(max_new_tokens=25, temperature=1.5, top_p=1.0, top_k=0, stop_ids=(), seed=123)
    a = generate(model, [1, 2, 3], settings)
    b = generate(model, [1, 2, 3], settings)
    c = generate(model, [1, 2, 3], SamplingSettings(**{**settings.__dict__, "seed": 124}))
    assert a == b and a != c


def test_events_report_candidates_probabilities_attention_and_speed():
    model = tiny_model()
    settings = SamplingSettings(max_new_tokens=6, temperature=0.8, top_k=10, top_p=0.9, stop_ids=(), seed=0,
                                candidates=4, attention_layer=-1)
    stats = GenerationStats()
    events = list(stream(model, [7, 8, 9], settings, stats=stats))
    assert [e.index for e in events] == list(range(6))
    for n, e in enumerate(events):
        probs = [p for _, p in e.candidates]
        assert len(e.candidates) <= 4 and probs == sorted(probs, reverse=True)
        assert 0 < e.probability <= 1
        assert e.attention.shape == (4, 3 + n)       # every head, over the context that chose the token
        assert torch.allclose(e.attention.sum(-1), torch.ones(4))
    assert events[-1].tokens_per_s > 0 and events[0].time_to_first_token_s > 0
    assert stats.new_tokens == 6 and stats.stop_reason == "max tokens" and stats.token_ids == [e.token_id
                                                                                               for e in events]
    one_head = list(stream(model, [7, 8, 9], SamplingSettings(**{**settings.__dict__, "attention_head": 1})))
    assert one_head[0].attention.shape == (3,)
    assert torch.allclose(one_head[0].attention, events[0].attention[1])


def test_a_stop_token_ends_the_text_and_closing_the_generator_stops_it():
    model = tiny_model()
    greedy = generate(model, [1, 2], SamplingSettings(max_new_tokens=10, temperature=0, stop_ids=()))
    stop = greedy[3]
    stats = GenerationStats()
    events = list(stream(model, [1, 2], SamplingSettings(max_new_tokens=10, temperature=0, stop_ids=(stop,)),
                         stats=stats))
    assert [e.token_id for e in events] == greedy[:greedy.index(stop) + 1]
    assert events[-1].is_stop and stats.stop_reason == "stop token"
    stats = GenerationStats()
    gen = stream(model, [1, 2], SamplingSettings(max_new_tokens=100, temperature=0, stop_ids=()), stats=stats)
    first = [next(gen) for _ in range(3)]
    gen.close()
    assert len(first) == 3 and stats.new_tokens == 3 and stats.stop_reason == "closed"
    assert list(stream(model, [1], SamplingSettings(max_new_tokens=0))) == []
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        next(stream(model, [1, 999]))


def test_a_kept_cache_reuses_the_common_prefix_and_changes_nothing():
    model = tiny_model()
    settings = SamplingSettings(max_new_tokens=8, temperature=0, stop_ids=())
    cache = KVCache()
    first = generate(model, [4, 5, 6], settings, cache=cache)
    assert cache.length == 3 + 8 - 1        # the last token chosen is not fed back
    follow_up = [4, 5, 6] + first + [11, 12]
    stats = GenerationStats()
    second = [e.token_id for e in stream(model, follow_up, settings, cache=cache, stats=stats)]
    assert stats.reused_tokens == 3 + 8 - 1
    assert second == generate(model, follow_up, settings)
    other = [4, 9, 9, 9]                    # diverges after one token: the rest of the cache is dropped
    stats = GenerationStats()
    third = [e.token_id for e in stream(model, other, settings, cache=cache, stats=stats)]
    assert stats.reused_tokens == 1 and third == generate(model, other, settings)


def test_log_probabilities_and_perplexity():
    model = tiny_model()
    ids = torch.randint(0, 61, (2, 9))
    lp = token_logprobs(model, ids)
    assert lp.shape == (2, 8)
    logits = model(ids).logits
    want = torch.log_softmax(logits[0, 3], -1)[ids[0, 4]]
    assert lp[0, 3].item() == pytest.approx(want.item())
    assert perplexity(model, ids) == pytest.approx(math.exp(-lp.mean().item()), rel=1e-9)
    labels = ids.clone()
    labels[:, :5] = -100                    # only the last four next-tokens are scored
    assert perplexity(model, ids, labels) == pytest.approx(math.exp(-lp[:, 4:].mean().item()), rel=1e-9)
    flat = tiny_model()
    for p in flat.parameters():
        torch.nn.init.zeros_(p)             # every logit 0: uniform over the 61 tokens
    assert perplexity(flat, ids) == pytest.approx(61.0)
    with pytest.raises(ValueError, match="No token is scored"):
        perplexity(model, ids, torch.full_like(ids, -100))


def test_a_cache_from_another_model_or_type_is_started_again():
    model = tiny_model()
    settings = SamplingSettings(max_new_tokens=5, temperature=0, stop_ids=())
    cache = KVCache()
    generate(model, [4, 5, 6], settings, cache=cache)
    single = model.float()
    stats = GenerationStats()
    out = [e.token_id for e in stream(single, [4, 5, 6, 7], settings, cache=cache, stats=stats)]
    assert stats.reused_tokens == 0 and cache.keys[0].dtype == torch.float32
    assert out == generate(single, [4, 5, 6, 7], settings)
    with pytest.raises(ValueError, match="clear"):
        with torch.no_grad():
            model.double()(torch.tensor([[1]]), cache)


def test_each_event_says_how_many_tokens_survived_top_k_and_top_p():
    model = tiny_model()
    events = list(stream(model, [1, 5, 9], SamplingSettings(max_new_tokens=4, temperature=1.0, top_k=3, top_p=1.0,
                                                            seed=0, stop_ids=())))
    assert [e.kept for e in events] == [3, 3, 3, 3]
    events = list(stream(model, [1, 5, 9], SamplingSettings(max_new_tokens=2, temperature=1.0, top_k=0, top_p=1.0,
                                                            seed=0, stop_ids=())))
    assert all(e.kept == model.config.vocab_size for e in events)
