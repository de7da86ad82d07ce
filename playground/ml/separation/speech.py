"""Two-speaker training mixtures made offline, from text-to-speech voices.

Nothing is downloaded. Sentences come from a small grammar of our own (:func:`sentence`),
voices from Debian's espeak-ng (its English voices and accents, times its ~100 voice
variants: ``en-us+f3``, ``en-gb-scotland+m2``, ...) and flite (kal, awb, rms, slt), each
utterance with a random pitch, speed and word gap. Utterances are synthesised once into a
*bank* (int16 at 8 kHz, cached on disk), and mixtures are drawn from the bank on the fly:
two utterances of two different voices, random offsets, one scaled against the other by a
random ratio (-5 to +5 dB), cut to a segment.

Text: a share of the utterances (``BankConfig.corpus``) read real English sentences from an
offline corpus, Debian's ``fortunes`` (:func:`corpus_sentences`), the rest sentences of the
grammar. The corpus is split in two halves by a hash of each sentence, one to train on and
one held out.

Random variants (``BankConfig.random_variants``): a share of the training utterances speak
with a voice no file has, a training variant whose formants are moved together by a random
vocal-tract-length factor and one by one by a little more, its pitch, voicing, consonants,
tone and echo scaled and its flutter and roughness redrawn (:func:`perturbed_variant`): every
such utterance is a new speaker. espeak-ng reads it from a data folder of our own
(:func:`_variant_data_dir`: the system's data linked in, and a ``voices/!v`` of the new files).

Held out for the test figure: a few variants and one flite voice never used in training
(:data:`HELD_OUT_VARIANTS`, :data:`HELD_OUT_FLITE`), the held-out half of the corpus, and
grammar sentences from another seed. Random variants are only made from training variants,
never for a held-out bank.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...progress import Progress

SAMPLE_RATE = 8000

ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                 "en-029", "en-us-nyc")
# espeak-ng variants (``espeak-ng --voices=variant``); the held-out ones are never trained on.
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3",
                  "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mr", "Storm", "Tweaky", "adam", "anika",
                  "boris", "edward", "iven", "john", "linda", "max", "michel", "norbert", "paul", "pablo",
                  "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "Alex", "Andrea", "belinda",
                  "benjamin", "caleb", "ed", "gustave", "Hugo", "Marco", "Mike", "shelby", "grandpa", "grandma",
                  "sandro", "antonio")
HELD_OUT_VARIANTS = ("m7", "m8", "f5", "klatt4", "Alicia", "aunty", "david", "kaukovalta", "miguel", "steph2")
TRAIN_FLITE = ("kal16", "awb", "rms")
HELD_OUT_FLITE = ("slt",)

_SUBJECTS = ("the old man", "a young girl", "my brother", "the teacher", "our neighbour", "the doctor",
             "a small dog", "the children", "her mother", "the pilot", "a tired student", "the baker",
             "his sister", "the farmer", "a clever fox", "the singer", "my friend", "the captain",
             "a quiet woman", "the workers", "the king", "a nervous boy", "the nurse", "the driver")
_VERBS = ("found", "painted", "carried", "watched", "remembered", "opened", "forgot", "bought", "cleaned",
          "followed", "dropped", "wanted", "answered", "visited", "repaired", "borrowed", "described",
          "noticed", "pushed", "sold", "missed", "chose", "counted", "measured")
_OBJECTS = ("a red bicycle", "the heavy box", "seven letters", "the broken window", "a yellow kite",
            "the wooden bridge", "a strange map", "the empty bottle", "two green apples", "the long train",
            "a silver coin", "the frozen lake", "nine paper cups", "the secret door", "a warm blanket",
            "the tall tower", "a purple umbrella", "the tiny island", "forty old books", "the shiny spoon")
_PLACES = ("near the river", "in the garden", "after lunch", "before midnight", "at the station",
           "under the table", "behind the school", "on a rainy morning", "in the kitchen", "by the sea",
           "during the storm", "at the market", "next to the church", "in the dark forest", "last summer",
           "on the top floor", "across the street", "in a hurry", "without a word", "at dawn")
_OPENERS = ("", "", "", "yesterday ", "suddenly ", "then ", "of course ", "every evening ", "once again ",
            "quite slowly ", "to be honest ")
_TAILS = ("", "", "", " and laughed", " but nobody cared", " while it was snowing", " because of the noise",
          " for the first time", " and went home", " as fast as possible", " which was surprising")
_QUESTIONS = ("why did {s} {v} {o}", "did {s} really {vb} {o} {p}", "who saw {s} {p}",
              "how many times did {s} {vb} {o}")
_BASE = {"found": "find", "painted": "paint", "carried": "carry", "watched": "watch", "remembered": "remember",
         "opened": "open", "forgot": "forget", "bought": "buy", "cleaned": "clean", "followed": "follow",
         "dropped": "drop", "wanted": "want", "answered": "answer", "visited": "visit", "repaired": "repair",
         "borrowed": "borrow", "described": "describe", "noticed": "notice", "pushed": "push", "sold": "sell",
         "missed": "miss", "chose": "choose", "counted": "count", "measured": "measure"}


def sentence(rng: np.random.Generator) -> str:
    """One random English sentence of our grammar (a statement, a question or a number)."""
    s, v, o, p = (str(rng.choice(options)) for options in (_SUBJECTS, _VERBS, _OBJECTS, _PLACES))
    kind = rng.random()
    if kind < 0.15:
        return str(rng.choice(_QUESTIONS)).format(s=s, v=v, vb=_BASE[v], o=o, p=p) + "?"
    if kind < 0.22:
        return f"the number is {int(rng.integers(2, 999))}, not {int(rng.integers(2, 999))}."
    return f"{rng.choice(_OPENERS)}{s} {v} {o} {p}{rng.choice(_TAILS)}."


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKABLE = re.compile(r"[A-Za-z][A-Za-z0-9 ,;'.!?-]*")


@functools.lru_cache(maxsize=2)
def corpus_sentences(held_out: bool = False) -> tuple[str, ...]:
    """English sentences of 4 to 24 words from Debian's ``fortunes`` quotes (offline), plain
    letters and punctuation only; the training half or the held-out half (by a hash of the
    sentence, so that a sentence is in one half wherever it appears)."""
    from ..minimind.corpora import read_quotes

    chosen = set()
    for quote in read_quotes():
        for piece in _SENTENCE_END.split(" ".join(quote.quote.split())):
            words = piece.split()
            if not 4 <= len(words) <= 24 or not _SPEAKABLE.fullmatch(piece):
                continue
            if (hashlib.sha1(piece.lower().encode()).digest()[0] % 2 == 1) == held_out:
                chosen.add(piece)
    return tuple(sorted(chosen))


@dataclass(frozen=True)
class Voice:
    engine: str   # "espeak" or "flite"
    name: str     # "en-us+f3" or "slt"
    pitch: int = 50     # espeak -p 0..99
    speed: int = 175    # espeak -s words per minute
    gap: int = 0        # espeak -g extra pause between words (10 ms units)
    variant: str = ""   # a random variant's file text (its file name is in ``name``, after "+")

    @property
    def speaker(self) -> str:
        """Who it is, for "two different voices": the voice and variant, not the pitch or speed."""
        return f"{self.engine}:{self.name}"


def tts_available() -> str | None:
    """None when espeak-ng is installed, else a one-line reason (flite is optional)."""
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not installed (Debian package espeak-ng; scripts/setup.sh installs it)."
    return None


def random_voice(rng: np.random.Generator, held_out: bool = False, random_variants: float = 0.0) -> Voice:
    """A voice to speak one utterance; with ``random_variants`` > 0 (training banks only), that
    share of the espeak-ng voices get a new variant made from a training one (:func:`perturbed_variant`)."""
    variants = HELD_OUT_VARIANTS if held_out else TRAIN_VARIANTS
    flite = HELD_OUT_FLITE if held_out else TRAIN_FLITE
    if shutil.which("flite") is not None and rng.random() < 0.15:
        return Voice("flite", str(rng.choice(flite)))
    accent, variant = str(rng.choice(ESPEAK_VOICES)), str(rng.choice(variants))
    text = ""
    if random_variants > 0 and not held_out and rng.random() < random_variants:
        text = perturbed_variant(stock_variant(variant), rng)
        variant = "rv-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    return Voice("espeak", f"{accent}+{variant}", pitch=int(rng.integers(15, 86)),
                 speed=int(rng.integers(130, 221)), gap=int(rng.integers(0, 4)), variant=text)


def voice_of(speaker: str) -> str:
    """The voice of a bank speaker: espeak-ng's variant ("espeak:en-us+m8" -> "m8"), or flite's voice."""
    return speaker.rsplit("+", 1)[1] if speaker.startswith("espeak:") and "+" in speaker else speaker


@functools.lru_cache(maxsize=1)
def espeak_data() -> Path | None:
    """espeak-ng's data folder (``espeak-ng --version`` says where), or None."""
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"Data at:\s*(\S.*)$", out.strip())
    return Path(found.group(1).strip()) if found else None


@functools.lru_cache(maxsize=256)
def stock_variant(name: str) -> str:
    """The text of one of espeak-ng's variant files (empty when it has none of that name)."""
    data = espeak_data()
    path = data / "voices" / "!v" / name if data is not None else None
    try:
        return path.read_text(errors="replace") if path is not None else ""
    except OSError:
        return ""


def perturbed_variant(base: str, rng: np.random.Generator) -> str:
    """A new espeak-ng variant file made from ``base`` (a variant file's text): every formant's
    frequency times one vocal-tract-length factor (0.85 to 1.18) and its own factor (0.93 to 1.07),
    heights and widths times 0.75 to 1.3; pitch times 0.8 to 1.25; voicing, consonants, tone and
    echo amounts times 0.7 to 1.4; flutter and roughness drawn anew. Lines it does not know stay."""
    tract = rng.uniform(0.85, 1.18)

    def scaled(value: str, lo: float, hi: float) -> str:
        return str(max(int(round(float(value) * rng.uniform(lo, hi))), 0))

    lines, formants = ["language variant", "name random"], set()
    for raw in base.splitlines():
        words = raw.split("//")[0].split()
        if not words or words[0] in ("language", "name", "flutter", "roughness"):
            continue
        key, nums = words[0], words[1:]
        if not all(re.fullmatch(r"-?\d+", n) for n in nums):
            lines.append(" ".join(words))
            continue
        if key == "formant" and len(nums) >= 4:
            formants.add(int(nums[0]))
            freq = "0" if nums[1] == "0" else str(int(round(int(nums[1]) * tract * rng.uniform(0.93, 1.07))))
            nums = [nums[0], freq, scaled(nums[2], 0.75, 1.3), scaled(nums[3], 0.75, 1.3), *nums[4:]]
        elif key == "pitch" and len(nums) == 2:
            factor = rng.uniform(0.8, 1.25)
            nums = [str(int(round(int(n) * factor))) for n in nums]
        elif key in ("voicing", "consonants"):
            nums = [scaled(n, 0.7, 1.4) for n in nums]
        elif key in ("tone", "echo"):      # tone: frequency, amplitude pairs; echo: delay, amplitude
            nums = [n if k % 2 == 0 else scaled(n, 0.7, 1.4) for k, n in enumerate(nums)]
        lines.append(" ".join([key, *nums]))
    for k in range(1, 6):                  # a variant that keeps the default formants still gets a tract
        if k not in formants:
            lines.append(f"formant {k} {int(round(100 * tract * rng.uniform(0.93, 1.07)))} 100 100")
    lines.append(f"flutter {int(rng.integers(0, 16))}")
    lines.append(f"roughness {int(rng.integers(0, 5))}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def _variant_data_dir() -> Path:
    """A data folder for espeak-ng's ``--path``: the system's data linked in, with an empty
    ``voices/!v`` for random variants (removed when the process ends)."""
    import atexit

    data = espeak_data()
    if data is None or not data.is_dir():
        raise UserError("espeak-ng's data folder was not found (espeak-ng --version names none).")
    root = Path(tempfile.mkdtemp(prefix="espeak-variants-"))
    atexit.register(shutil.rmtree, root, True)
    mine = root / "espeak-ng-data"
    (mine / "voices" / "!v").mkdir(parents=True)
    for item in data.iterdir():
        if item.name != "voices":
            (mine / item.name).symlink_to(item)
    for item in (data / "voices").iterdir():
        if item.name != "!v":
            (mine / "voices" / item.name).symlink_to(item)
    return root


def synthesise(text: str, voice: Voice, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono at ``sample_rate``, silence trimmed at both ends."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        out = Path(tmp) / "u.wav"
        variant_file = None
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed),
                   "-g", str(voice.gap), "-w", str(out), text]
            if voice.variant:
                root = _variant_data_dir()
                variant_file = root / "espeak-ng-data" / "voices" / "!v" / voice.name.split("+", 1)[1]
                variant_file.write_text(voice.variant)
                cmd[1:1] = [f"--path={root}"]
        else:
            cmd = ["flite", "-voice", voice.name, "-t", text, "-o", str(out)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise UserError(tts_available() or f"{cmd[0]} is not installed.") from None
        except subprocess.CalledProcessError as exc:
            raise UserError(f"{cmd[0]} failed for voice {voice.name}: "
                            f"{exc.stderr.decode(errors='replace').strip()[:200]}") from None
        finally:
            if variant_file is not None:
                variant_file.unlink(missing_ok=True)
        rate, pcm = wavfile.read(out)
        audio = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
    if rate != sample_rate:
        from math import gcd

        g = gcd(rate, sample_rate)
        audio = resample_poly(audio, sample_rate // g, rate // g).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.01 * (np.abs(audio).max() + 1e-9))
    if len(loud):
        audio = audio[max(loud[0] - 80, 0):loud[-1] + 80]
    return audio.astype(np.float32)


@dataclass
class BankConfig:
    utterances: int = 2000
    seed: int = 0
    held_out: bool = False
    sample_rate: int = SAMPLE_RATE
    corpus: float = 0.0     # the share of utterances reading a corpus sentence (the rest: the grammar)
    random_variants: float = 0.0   # the share of espeak-ng voices given a new random variant (training only)

    def key(self) -> str:
        fields = asdict(self)
        for name in ("corpus", "random_variants"):
            if not fields[name]:
                del fields[name]      # banks made before there was such a setting keep their key
        text = json.dumps(fields, sort_keys=True) + "|v1"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class UtteranceBank:
    """Many synthesised utterances in one int16 array, with their speaker labels."""

    def __init__(self, audio: np.ndarray, starts: np.ndarray, speakers: Sequence[str], sample_rate: int) -> None:
        self.audio = audio            # int16 [total]
        self.starts = starts          # int64 [n + 1]: utterance i is audio[starts[i]:starts[i+1]]
        self.speakers = list(speakers)
        self.sample_rate = sample_rate
        ids = {name: k for k, name in enumerate(sorted(set(self.speakers)))}
        self.speaker_ids = np.array([ids[s] for s in self.speakers])
        self._alike: dict[int, list[np.ndarray]] = {}   # alike_groups(), by the speakers each holds

    def __len__(self) -> int:
        return len(self.speakers)

    def alike_groups(self, speakers: int = 2) -> list[np.ndarray]:
        """The bank's utterances grouped by voice (:func:`voice_of`), only the groups that hold at
        least ``speakers`` speakers: one espeak-ng variant in several accents (computed once)."""
        if speakers not in self._alike:
            by: dict[str, list[int]] = {}
            for i, name in enumerate(self.speakers):
                by.setdefault(voice_of(name), []).append(i)
            self._alike[speakers] = [np.array(g) for _, g in sorted(by.items())
                                     if len(set(self.speaker_ids[g].tolist())) >= speakers]
        return self._alike[speakers]

    def utterance(self, i: int) -> np.ndarray:
        return self.audio[self.starts[i]:self.starts[i + 1]].astype(np.float32) / 32767.0

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, audio=self.audio, starts=self.starts, speakers=np.array(self.speakers),
                 sample_rate=np.array(self.sample_rate))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> UtteranceBank:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["audio"], f["starts"], [str(s) for s in f["speakers"]], int(f["sample_rate"]))


def build_bank(config: BankConfig, cache_dir: Path | None = None) -> Iterator[Progress | UtteranceBank]:
    """Synthesise (or read from the cache) a bank; yields Progress, then the bank last."""
    path = cache_dir / f"tts-bank-{config.key()}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        yield UtteranceBank.load(path)
        return
    reason = tts_available()
    if reason:
        raise UserError(reason)
    rng = np.random.default_rng(config.seed)
    texts = corpus_sentences(config.held_out) if config.corpus > 0 else ()
    chunks, speakers, starts = [], [], [0]
    for k in range(config.utterances):
        voice = random_voice(rng, held_out=config.held_out, random_variants=config.random_variants)
        if texts and rng.random() < config.corpus:
            text = str(texts[int(rng.integers(len(texts)))])
        else:
            text = " ".join(sentence(rng) for _ in range(int(rng.integers(1, 3))))
        audio = synthesise(text, voice, config.sample_rate)
        if len(audio) < config.sample_rate // 2:
            continue
        pcm = np.clip(audio / (np.abs(audio).max() + 1e-9) * 0.9, -1, 1)
        chunks.append((pcm * 32767).astype(np.int16))
        speakers.append(voice.speaker)
        starts.append(starts[-1] + len(chunks[-1]))
        if k % 20 == 0:
            yield Progress((k + 1) / config.utterances, f"synthesising utterance {k + 1} of {config.utterances}")
    bank = UtteranceBank(np.concatenate(chunks), np.array(starts, dtype=np.int64), speakers, config.sample_rate)
    if path is not None:
        bank.save(path)
    yield bank


def perturb_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (linear interpolation): pitch *and* formants move
    by ``factor``, the length by ``1 / factor``; a voice the bank does not have (the "speed
    perturbation" of speech recognition)."""
    n_out = max(int(len(audio) / factor), 1)
    positions = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def make_mixture(bank: UtteranceBank, rng: np.random.Generator, segment: int, n_src: int = 2,
                 ratio_db: float = 5.0, speed: float = 0.0,
                 picked: list[int] | None = None, alike: float = 0.0,
                 invert: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One training example: (mixture [T], sources [C, T]) of ``n_src`` different speakers.

    Each source is a random stretch of one utterance (padded with silence when shorter,
    placed at a random offset), normalised to unit power over its active part, then given a
    random gain in +-``ratio_db``/2 dB; the mixture is their sum, and all are scaled together
    so that the mixture's peak is at most 0.9. With ``speed`` > 0, half of the sources are
    first played faster or slower by a random factor within 1 +- ``speed``
    (:func:`perturb_speed`), for voices beyond the bank's. With ``alike`` > 0, that share of
    the mixtures take all their speakers from one voice (one espeak-ng variant in different
    accents: the same timbre, told apart only by pitch, accent and rhythm), when the bank has
    such voices. With ``invert`` > 0, that share of the mixtures come with their polarity
    inverted (mixture and sources times -1: a microphone may record either way, and the TTS
    voices all come one way). The utterances' indices in the bank are appended to ``picked``
    when it is given.
    """
    pool = None
    if alike > 0 and rng.random() < alike:    # (no draw at all without ``alike``: older mixtures stay)
        groups = bank.alike_groups(n_src)
        pool = groups[int(rng.integers(len(groups)))] if groups else None
    chosen: list[int] = []
    while len(chosen) < n_src:
        i = int(pool[rng.integers(len(pool))]) if pool is not None else int(rng.integers(len(bank)))
        if all(bank.speaker_ids[i] != bank.speaker_ids[j] for j in chosen):
            chosen.append(i)
    if picked is not None:
        picked.extend(chosen)
    sources = np.zeros((n_src, segment), np.float32)
    for c, i in enumerate(chosen):
        u = bank.utterance(i)
        if speed > 0 and rng.random() < 0.5:
            u = perturb_speed(u, float(rng.uniform(1 - speed, 1 + speed)))
        if len(u) > segment:
            start = int(rng.integers(len(u) - segment + 1))
            piece, at = u[start:start + segment], 0
        else:
            piece, at = u, int(rng.integers(segment - len(u) + 1))
        power = float(np.sqrt(np.mean(piece**2) + 1e-8))
        gain = 10 ** (rng.uniform(-ratio_db / 2, ratio_db / 2) / 20) / power
        sources[c, at:at + len(piece)] = piece * gain
    mixture = sources.sum(axis=0)
    scale = 0.9 / max(float(np.abs(mixture).max()), float(np.abs(sources).max()), 1e-6)
    if invert > 0 and rng.random() < invert:      # (no draw without ``invert``: older mixtures stay)
        scale = -scale
    return (mixture * scale).astype(np.float32), (sources * scale).astype(np.float32)


def mixture_batches(bank: UtteranceBank, batch: int, segment: int, seed: int, n_src: int = 2,
                    speed: float = 0.0, alike: float = 0.0,
                    invert: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches (mixtures [B, T], sources [B, C, T]), mixed on the fly, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        pairs = [make_mixture(bank, rng, segment, n_src, speed=speed, alike=alike, invert=invert)
                 for _ in range(batch)]
        yield np.stack([m for m, _ in pairs]), np.stack([s for _, s in pairs])
