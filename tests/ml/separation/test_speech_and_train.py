"""The TTS mixtures and the training script: reproducible sentences and voices, mixtures that
add up, a cached bank, and a short training run that writes its run files and weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from playground.ml.separation import speech
from playground.ml.separation import train as sep_train


def tone_bank(n: int = 12, rate: int = speech.SAMPLE_RATE) -> speech.UtteranceBank:
    """A bank of tones of different pitch and length, one 'speaker' per pitch."""
    rng = np.random.default_rng(0)
    chunks, speakers = [], []
    for k in range(n):
        t = np.arange(int(rate * rng.uniform(0.6, 1.5))) / rate
        chunks.append((0.5 * np.sin(2 * np.pi * (150 + 40 * (k % 6)) * t) * 32767).astype(np.int16))
        speakers.append(f"tone:{k % 6}")
    starts = np.cumsum([0] + [len(c) for c in chunks])
    return speech.UtteranceBank(np.concatenate(chunks), starts, speakers, rate)


def run_training(gen) -> tuple[list, dict]:
    """Drive a training generator to its end: (its SepStep items, its result)."""
    steps = []
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return steps, stop.value
        if isinstance(item, sep_train.SepStep):
            steps.append(item)


def test_sentences_and_voices_are_reproducible_and_held_out_voices_are_apart():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [speech.sentence(a) for _ in range(20)] == [speech.sentence(b) for _ in range(20)]
    rng = np.random.default_rng(5)
    text = " ".join(speech.sentence(rng) for _ in range(50))
    assert len(set(text.split())) > 60  # a varied vocabulary
    assert not set(speech.TRAIN_VARIANTS) & set(speech.HELD_OUT_VARIANTS)
    assert not set(speech.TRAIN_FLITE) & set(speech.HELD_OUT_FLITE)
    rng = np.random.default_rng(0)
    for _ in range(50):
        voice = speech.random_voice(rng, held_out=True)
        name = voice.name.split("+")[-1]
        assert name in speech.HELD_OUT_VARIANTS + speech.HELD_OUT_FLITE
        assert 15 <= voice.pitch <= 85 or voice.engine == "flite"


def test_a_mixture_is_the_sum_of_its_sources_from_different_speakers():
    bank = tone_bank()
    rng = np.random.default_rng(1)
    for _ in range(20):
        mix, src = speech.make_mixture(bank, rng, 4000)
        assert mix.shape == (4000,) and src.shape == (2, 4000) and mix.dtype == np.float32
        np.testing.assert_allclose(mix, src.sum(axis=0), atol=1e-6)
        assert np.abs(mix).max() <= 0.9 + 1e-6 and np.abs(src).max() <= 0.9 + 1e-6
        assert all(np.abs(s).max() > 0 for s in src)
    # Different speakers: two sources never share a pitch (the bank's speaker).
    mix, src = speech.make_mixture(bank, np.random.default_rng(2), 8000)
    peaks = [np.argmax(np.abs(np.fft.rfft(s))) for s in src]
    assert peaks[0] != peaks[1]
    # ``picked`` tells which utterances were used, and does not change the mixture.
    picked: list[int] = []
    mix2, src2 = speech.make_mixture(bank, np.random.default_rng(2), 8000, picked=picked)
    np.testing.assert_array_equal(mix2, mix)
    assert len(picked) == 2 and bank.speaker_ids[picked[0]] != bank.speaker_ids[picked[1]]
    for source, i in zip(src2, picked):     # each source has its picked speaker's pitch
        hz = np.argmax(np.abs(np.fft.rfft(source))) * speech.SAMPLE_RATE / len(source)
        assert abs(hz - (150 + 40 * int(bank.speakers[i].split(":")[1]))) < 3
    batches = speech.mixture_batches(bank, 3, 2000, seed=4)
    m, s = next(batches)
    assert m.shape == (3, 2000) and s.shape == (3, 2, 2000)
    m2, _ = next(speech.mixture_batches(bank, 3, 2000, seed=4))
    np.testing.assert_array_equal(m, m2)  # reproducible from the seed


def voice_bank() -> speech.UtteranceBank:
    """Tones named like the TTS bank's speakers: two variants in three accents each, one flite voice."""
    rate = speech.SAMPLE_RATE
    names = [f"espeak:{accent}+{variant}" for variant in ("m1", "f2") for accent in ("en-us", "en-gb", "en-029")]
    names += ["flite:awb"]
    chunks, speakers = [], []
    for k in range(4 * len(names)):
        t = np.arange(rate) / rate
        chunks.append((0.5 * np.sin(2 * np.pi * (150 + 30 * (k % len(names))) * t) * 32767).astype(np.int16))
        speakers.append(names[k % len(names)])
    starts = np.cumsum([0] + [len(c) for c in chunks])
    return speech.UtteranceBank(np.concatenate(chunks), starts, speakers, rate)


def test_alike_mixtures_pair_one_variant_in_two_accents():
    assert speech.voice_of("espeak:en-gb-scotland+klatt4") == "klatt4"
    assert speech.voice_of("flite:slt") == "flite:slt"
    bank = voice_bank()
    groups = bank.alike_groups()          # m1 and f2 (three accents each); the flite voice has no partner
    assert sorted({speech.voice_of(bank.speakers[int(g[0])]) for g in groups}) == ["f2", "m1"]
    assert all(len({speech.voice_of(bank.speakers[int(i)]) for i in g}) == 1 for g in groups)
    assert len(bank.alike_groups(3)) == 2 and bank.alike_groups(4) == []   # three accents each, not four

    def pairs(alike: float, seed: int = 3) -> list[tuple[str, str]]:
        rng, picked = np.random.default_rng(seed), []
        for _ in range(300):
            mix, src = speech.make_mixture(bank, rng, 4000, alike=alike, picked=picked)
            np.testing.assert_allclose(mix, src.sum(axis=0), atol=1e-6)
        return [(bank.speakers[a], bank.speakers[b]) for a, b in zip(picked[::2], picked[1::2])]

    def share(found: list[tuple[str, str]]) -> float:
        return float(np.mean([speech.voice_of(a) == speech.voice_of(b) for a, b in found]))

    for alike in (0.0, 0.5, 1.0):
        found = pairs(alike)
        assert all(a != b for a, b in found)                # always two different speakers
        chance = share(pairs(0.0))
        assert abs(share(found) - (alike + (1 - alike) * chance)) < 0.1
    assert share(pairs(1.0)) == 1.0
    # A bank without such voices (one accent per tone) falls back to any two speakers.
    tones = tone_bank()
    assert tones.alike_groups() == []
    mix, src = speech.make_mixture(tones, np.random.default_rng(0), 4000, alike=1.0)
    assert src.shape == (2, 4000)
    batch, _ = next(speech.mixture_batches(bank, 4, 2000, seed=1, alike=1.0))
    assert batch.shape == (4, 2000)


def test_inverted_mixtures_are_the_same_mixtures_times_minus_one():
    bank = tone_bank()
    signs = []
    for k in range(200):
        plain_picked, picked = [], []
        mix, src = speech.make_mixture(bank, np.random.default_rng(k), 4000, picked=plain_picked)
        mix2, src2 = speech.make_mixture(bank, np.random.default_rng(k), 4000, invert=0.3, picked=picked)
        assert picked == plain_picked        # the same utterances, gains and offsets
        flipped = bool(np.allclose(mix2, -mix))
        assert flipped or np.array_equal(mix2, mix)
        np.testing.assert_allclose(src2, -src if flipped else src, atol=1e-7)
        np.testing.assert_allclose(mix2, src2.sum(axis=0), atol=1e-6)
        signs.append(flipped)
    assert 0.2 < np.mean(signs) < 0.4        # about the share asked for
    batch, sources = next(speech.mixture_batches(bank, 4, 2000, seed=1, invert=1.0))
    plain, plain_sources = next(speech.mixture_batches(bank, 4, 2000, seed=1))
    np.testing.assert_allclose(batch[0], -plain[0], atol=1e-7)     # (later ones draw after the sign)
    np.testing.assert_allclose(sources[0], -plain_sources[0], atol=1e-7)
    np.testing.assert_allclose(batch, sources.sum(axis=1), atol=1e-6)


def test_speed_perturbation_moves_pitch_and_length_together():
    rate = speech.SAMPLE_RATE
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for factor in (0.9, 1.12):
        out = speech.perturb_speed(tone, factor)
        assert out.dtype == np.float32 and abs(len(out) - rate / factor) <= 1
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        peak_hz = np.argmax(spectrum) * rate / len(out)
        assert abs(peak_hz - 200 * factor) < 3
    np.testing.assert_allclose(speech.perturb_speed(tone, 1.0), tone, atol=1e-6)
    # In a mixture: still the sum of its sources, reproducible, and some sources really changed.
    bank = tone_bank()
    plain = [speech.make_mixture(bank, np.random.default_rng(k), 4000) for k in range(8)]
    moved = [speech.make_mixture(bank, np.random.default_rng(k), 4000, speed=0.1) for k in range(8)]
    again = [speech.make_mixture(bank, np.random.default_rng(k), 4000, speed=0.1) for k in range(8)]
    for (mix, src), (mix2, _) in zip(moved, again):
        np.testing.assert_allclose(mix, src.sum(axis=0), atol=1e-6)
        np.testing.assert_array_equal(mix, mix2)
    assert any(not np.allclose(a[0], b[0]) for a, b in zip(plain, moved))


def test_the_bank_is_built_once_and_read_back_from_the_cache(tmp_path, monkeypatch):
    calls = []

    def fake_synthesise(text, voice, sample_rate=speech.SAMPLE_RATE):
        calls.append(voice.speaker)
        t = np.arange(sample_rate) / sample_rate
        return (0.3 * np.sin(2 * np.pi * (100 + len(calls)) * t)).astype(np.float32)

    monkeypatch.setattr(speech, "synthesise", fake_synthesise)
    monkeypatch.setattr(speech, "tts_available", lambda: None)
    config = speech.BankConfig(utterances=8, seed=1)
    items = list(speech.build_bank(config, tmp_path))
    bank = items[-1]
    assert isinstance(bank, speech.UtteranceBank) and len(bank) == 8 and len(calls) == 8
    again = list(speech.build_bank(config, tmp_path))[-1]
    assert len(calls) == 8  # from the cache
    np.testing.assert_array_equal(again.audio, bank.audio)
    assert again.speakers == bank.speakers
    assert speech.BankConfig(utterances=8, seed=2).key() != config.key()


def test_corpus_sentences_are_split_into_a_training_and_a_held_out_half(tmp_path, monkeypatch):
    from playground.ml.minimind import corpora

    quotes = [corpora.Quote("To teach is to learn twice. Short one. A cat sat on the warm mat today!", "", "x"),
              corpora.Quote("Numbers like 42 are fine to say aloud. But <html> tags are not fine at all.", "", "y")]
    quotes += [corpora.Quote(f"Sentence number {k} is read by a voice.", "", "z") for k in range(40)]
    monkeypatch.setattr(corpora, "read_quotes", lambda: quotes)
    speech.corpus_sentences.cache_clear()
    try:
        train, held = speech.corpus_sentences(False), speech.corpus_sentences(True)
    finally:
        speech.corpus_sentences.cache_clear()
    assert not set(train) & set(held) and len(train) > 5 and len(held) > 5
    every = set(train) | set(held)
    assert "To teach is to learn twice." in every and "A cat sat on the warm mat today!" in every
    assert "Numbers like 42 are fine to say aloud." in every
    assert "Short one." not in every                                   # under four words
    assert not any("<" in t for t in every)                            # not speakable as written
    # A bank with corpus=1 reads only corpus sentences of its half.
    spoken = []

    def fake_synthesise(text, voice, sample_rate=speech.SAMPLE_RATE):
        spoken.append(text)
        return (0.3 * np.sin(np.arange(sample_rate) / 7.0)).astype(np.float32)

    monkeypatch.setattr(speech, "synthesise", fake_synthesise)
    monkeypatch.setattr(speech, "tts_available", lambda: None)
    monkeypatch.setattr(speech, "corpus_sentences", lambda held_out=False: held if held_out else train)
    list(speech.build_bank(speech.BankConfig(utterances=10, seed=3, held_out=True, corpus=1.0), tmp_path))
    assert len(spoken) == 10 and set(spoken) <= set(held)
    assert speech.BankConfig(10, 3, corpus=0.5).key() != speech.BankConfig(10, 3).key()


def test_no_tts_engine_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(Exception, match="espeak-ng"):
        list(speech.build_bank(speech.BankConfig(utterances=2, seed=9), tmp_path))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speaks_at_8_khz():
    audio = speech.synthesise("the old man found a red bicycle.", speech.Voice("espeak", "en-us+m3"))
    assert audio.dtype == np.float32 and 0.5 * speech.SAMPLE_RATE < len(audio) < 5 * speech.SAMPLE_RATE
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_a_short_training_run_learns_writes_its_run_and_weights(tmp_path, monkeypatch):
    from playground.ml.separation import loaders
    from playground.ml.training.runs import RunStore

    monkeypatch.setitem(sep_train.PRESETS, "tiny", dict(N=16, L=8, B=8, H=16, Sc=8, P=3, X=2, R=1))
    bank = tone_bank(24)

    def fake_bank(config, cache_dir=None):
        yield bank

    monkeypatch.setattr(speech, "build_bank", fake_bank)
    cfg = sep_train.TrainConfig(preset="tiny", batch=4, segment_s=0.25, minutes=5, max_steps=8, check_every=5,
                                val_mixtures=4, utterances=24)     # (steps, not time, end it: a busy CPU is fine)
    store = RunStore(tmp_path / "runs")
    out = tmp_path / "model.safetensors"
    state = tmp_path / "state.pt"
    steps, result = run_training(sep_train.train(cfg, store, out, state, None, command="test"))
    assert result["status"] == "finished" and result["steps"] == len(steps) == 8
    assert np.isfinite(result["val_si_snri"])
    model = loaders.load_separator(out).model
    assert model.config.N == 16 and model.n_src == 2
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["made_by"] == "playground.ml.separation.train" and sidecar["steps"] == len(steps)
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].status == "finished"
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == len(steps)
    # Resuming continues from the saved step (with a larger budget).
    cfg2 = sep_train.TrainConfig(**{**cfg.__dict__, "max_steps": 12})
    gen = sep_train.train(cfg2, None, None, state, None)
    first = next(item for item in gen if isinstance(item, sep_train.SepStep))
    assert first.step == len(steps) + 1
    gen.close()
    # Each run is kept as a stage (command, config, steps), and the weights' JSON lists them all.
    cfg3 = sep_train.TrainConfig(**{**cfg.__dict__, "max_steps": 12, "speed": 0.1,
                                    "resume_lr": 3e-4})
    resumed, second = run_training(sep_train.train(cfg3, None, out, state, None, command="second"))
    rates = [item.lr for item in resumed]
    assert rates[0] == 3e-4  # the resumed rate, not the saved 1e-3
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert "speed-perturbed by up to 10%" in sidecar["training_data"] and "fortunes" not in sidecar["training_data"]
    stages = sidecar["stages"]
    # (the run closed after one step above is a stage too, with its empty command)
    assert [s["command"] for s in stages] == ["test", "", "second"]
    assert stages[0]["from_step"] == 0 and stages[0]["to_step"] == stages[1]["from_step"] == len(steps)
    assert all(a["to_step"] == b["from_step"] for a, b in zip(stages, stages[1:]))
    assert stages[2]["to_step"] == second["steps"] > len(steps) + 1 and stages[2]["train_config"]["speed"] == 0.1
    assert torch.load(state, weights_only=True)["stages"] == stages


def test_a_run_grown_from_smaller_weights_starts_where_they_ended(tmp_path, monkeypatch):
    from playground.ml.separation import loaders
    from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig

    monkeypatch.setitem(sep_train.PRESETS, "tiny3", dict(N=16, L=8, B=8, H=16, Sc=8, P=3, X=3, R=1))
    bank = tone_bank(24)
    monkeypatch.setattr(speech, "build_bank", lambda config, cache_dir=None: iter([bank]))
    torch.manual_seed(1)
    small = ConvTasNet(ConvTasNetConfig(N=8, L=8, B=8, H=16, Sc=8, P=3, X=2, R=1))
    earlier = [{"command": "first", "from_step": 0, "to_step": 40}]
    small_path = loaders.save_separator(tmp_path / "small.safetensors", small, {"steps": 40, "stages": earlier})
    cfg = sep_train.TrainConfig(preset="tiny3", batch=4, segment_s=0.25, minutes=0.02, check_every=5,
                                val_mixtures=4, utterances=24, grow_from=str(small_path))
    out = tmp_path / "big.safetensors"
    items, result = run_training(sep_train.train(cfg, None, out, tmp_path / "state.pt", None, command="grow"))
    steps = [item.step for item in items]
    assert steps[0] == 41 and result["steps"] == steps[-1]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert [s.get("command") for s in sidecar["stages"]] == ["first", None, "grow"]
    assert sidecar["stages"][1]["grown"] == "X 2 -> 3, R 1 -> 1, N 8 -> 16" and sidecar["stages"][2]["from_step"] == 40
    assert loaders.load_separator(out).model.config.X == 3


def test_a_state_from_before_stages_takes_its_first_stage_from_the_weights_json(tmp_path):
    out = tmp_path / "m.safetensors"
    out.with_suffix(".json").write_text(json.dumps({"command": "old run", "steps": 70, "train_config": {"batch": 8}}))
    assert sep_train.earlier_stage(out, 70)[0]["command"] == "old run"
    assert sep_train.earlier_stage(out, 71) == []      # other weights than the state's
    assert sep_train.earlier_stage(None, 70) == []
    out.with_suffix(".json").write_text("{not json")
    assert sep_train.earlier_stage(out, 70) == []


def test_boolean_settings_read_yes_and_no():
    import argparse

    from playground.ml.training import script

    parser = argparse.ArgumentParser()
    script.add_config_arguments(parser, sep_train.TrainConfig())
    assert parser.parse_args(["--compile", "yes"]).compile is True
    assert parser.parse_args(["--compile", "no"]).compile is False
    assert parser.parse_args([]).compile is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "maybe"])


BASE_VARIANT = """language variant
name base
gender male 70
pitch 75 109   // a comment
flutter 5
formant 1  97 100 100
formant 2  90  95 120
formant 6   0   0   0
voicing 150
tone 600 255 1200 100
stressAdd 0 0 -10 -10 0 0 10 40
breathw 150 150 200 200
"""


def parsed(text: str) -> dict[str, list[list[int]]]:
    lines: dict[str, list[list[int]]] = {}
    for raw in text.splitlines():
        words = raw.split()
        if words and words[0] not in ("language", "name", "gender"):
            lines.setdefault(words[0], []).append([int(w) for w in words[1:]])
    return lines


def test_a_perturbed_variant_moves_formants_pitch_and_voice_quality_within_their_ranges():
    seen_tracts = []
    for seed in range(30):
        text = speech.perturbed_variant(BASE_VARIANT, np.random.default_rng(seed))
        assert text == speech.perturbed_variant(BASE_VARIANT, np.random.default_rng(seed))  # reproducible
        lines = parsed(text)
        formants = {f[0]: f[1:] for f in lines["formant"]}
        assert sorted(formants) == [1, 2, 3, 4, 5, 6]       # 3..5 added (default 100), 6 kept
        assert formants[6] == [0, 0, 0]                      # a switched-off formant stays off
        ratio1, ratio2 = formants[1][0] / 97, formants[2][0] / 90
        assert 0.85 * 0.93 - 0.01 <= ratio1 <= 1.18 * 1.07 + 0.01
        assert abs(ratio1 / ratio2 - 1) < 0.16                # one tract factor moves them together
        assert 0.75 * 95 - 1 <= formants[2][1] <= 1.3 * 95 + 1 and 0.75 * 120 - 1 <= formants[2][2] <= 1.3 * 120 + 1
        seen_tracts.append(formants[3][0] / 100)
        low, high = lines["pitch"][0]
        assert abs(low / 75 - high / 109) < 0.02 and 0.79 <= low / 75 <= 1.26
        assert 0.7 * 150 - 1 <= lines["voicing"][0][0] <= 1.4 * 150 + 1
        tone = lines["tone"][0]
        assert tone[0::2] == [600, 1200] and 0.7 * 100 - 1 <= tone[3] <= 1.4 * 100 + 1   # frequencies kept
        assert lines["stressAdd"] == [[0, 0, -10, -10, 0, 0, 10, 40]]                       # unknown lines kept
        assert len(lines["flutter"]) == 1 and 0 <= lines["flutter"][0][0] <= 15
        assert 0 <= lines["roughness"][0][0] <= 4
        assert "comment" not in text
    assert max(seen_tracts) - min(seen_tracts) > 0.2         # voices of different size


def test_random_variants_are_for_training_banks_only_and_each_is_a_new_speaker(monkeypatch):
    monkeypatch.setattr(speech, "stock_variant", lambda name: BASE_VARIANT)
    rng = np.random.default_rng(0)
    voices = [speech.random_voice(rng, random_variants=1.0) for _ in range(40)]
    espeak = [v for v in voices if v.engine == "espeak"]
    assert espeak and all(v.variant and v.name.split("+")[1].startswith("rv-") for v in espeak)
    assert len({v.speaker for v in espeak}) == len(espeak)
    held = [speech.random_voice(rng, held_out=True, random_variants=1.0) for _ in range(40)]
    assert all(not v.variant and v.name.split("+")[-1] in speech.HELD_OUT_VARIANTS + speech.HELD_OUT_FLITE
               for v in held)
    # With no random variants, a bank's voices (and its cache key) are what they were before the setting.
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert [speech.random_voice(a) for _ in range(30)] == [speech.random_voice(b, random_variants=0.0)
                                                           for _ in range(30)]
    assert speech.BankConfig(10, 3, random_variants=0.0).key() == speech.BankConfig(10, 3).key()
    assert speech.BankConfig(10, 3, random_variants=0.5).key() != speech.BankConfig(10, 3).key()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speaks_with_a_random_variant_file():
    def centroid(audio: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(audio))
        return float((spectrum * np.fft.rfftfreq(len(audio))).sum() / spectrum.sum())

    text = "the old man found a red bicycle near the river."
    stock = speech.Voice("espeak", "en-us+m1")
    plain = centroid(speech.synthesise(text, stock))
    moved = {}
    for tract in (0.8, 1.2):
        body = "language variant\nname t\n" + "".join(f"formant {k} {int(100 * tract)} 100 100\n" for k in range(1, 9))
        voice = speech.Voice("espeak", f"en-us+rv-test{int(tract * 10)}", variant=body)
        moved[tract] = centroid(speech.synthesise(text, voice))
    assert moved[0.8] < plain < moved[1.2]          # a longer tract, lower formants; a shorter, higher
    assert not any((speech._variant_data_dir() / "espeak-ng-data" / "voices" / "!v").iterdir())  # files removed
    assert speech.stock_variant("m1").startswith("language variant")
    assert speech.stock_variant("no-such-variant") == ""


def test_a_run_started_from_weights_of_its_size_goes_on_from_their_steps(tmp_path, monkeypatch):
    from playground.errors import UserError
    from playground.ml.separation import loaders
    from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig

    shape = dict(N=8, L=8, B=8, H=16, Sc=8, P=3, X=2, R=1)
    monkeypatch.setitem(sep_train.PRESETS, "tiny2", shape)
    bank = tone_bank(24)
    monkeypatch.setattr(speech, "build_bank", lambda config, cache_dir=None: iter([bank]))
    torch.manual_seed(1)
    earlier = ConvTasNet(ConvTasNetConfig(**shape))
    path = loaders.save_separator(tmp_path / "earlier.safetensors", earlier,
                                  {"steps": 30, "stages": [{"command": "first", "from_step": 0, "to_step": 30}]})
    cfg = sep_train.TrainConfig(preset="tiny2", batch=4, segment_s=0.25, minutes=0.02, check_every=5,
                                val_mixtures=4, utterances=24, init_from=str(path), random_variants=0.5, alike=0.5,
                                invert=0.5)
    out = tmp_path / "tuned.safetensors"
    gen = sep_train.train(cfg, None, out, tmp_path / "state.pt", None, command="tune")
    first = next(item for item in gen if isinstance(item, sep_train.SepStep))
    gen.close()
    cfg = sep_train.TrainConfig(**{**cfg.__dict__, "minutes": 0.02})
    items, result = run_training(sep_train.train(cfg, None, out, tmp_path / "state2.pt", None, command="tune"))
    assert first.step == 31 and items[0].step == 31 and result["steps"] == items[-1].step
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert [s["command"] for s in sidecar["stages"]] == ["first", "tune"]
    assert sidecar["stages"][1]["from_step"] == 30 and sidecar["train_config"]["init_from"] == str(path)
    assert "random variant" in sidecar["training_data"] and "50% of the mixtures of one" in sidecar["training_data"]
    assert "50% of the mixtures with their polarity inverted" in sidecar["training_data"]
    # Weights of another size, or both ways of starting, are refused in one line.
    bad = sep_train.TrainConfig(**{**cfg.__dict__, "preset": "default"})
    with pytest.raises(UserError, match="not the preset's"):
        next(sep_train.train(bad, None, None, None, None))
    both = sep_train.TrainConfig(**{**cfg.__dict__, "grow_from": str(path)})
    with pytest.raises(UserError, match="not both"):
        next(sep_train.train(both, None, None, None, None))
