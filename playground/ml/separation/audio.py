"""Audio in and out for the separation tab: files, resampling, microphones and speakers (no Qt).

Files go through soundfile (libsndfile, bundled in its wheel): :func:`read_audio` opens
WAV, FLAC and OGG (and whatever else libsndfile reads, such as AIFF or MP3) and always
gives float32 mono in [-1, 1]; :func:`write_audio` saves WAV, FLAC or OGG Vorbis and scales
the audio down instead of letting it clip. Every refusal is one sentence that names the
file (:class:`~playground.errors.BadFileError` for a file we were given, a
:class:`~playground.errors.UserError` for a name we cannot save under).

Sound devices go through sounddevice (PortAudio). It is imported only inside the functions
that need it, so that importing this module never fails: without the system PortAudio
library ``import sounddevice`` raises ``OSError``, and on a machine without a sound card
PortAudio lists no devices at all. :func:`audio_unavailable_reason` says which, in words
for the user; :func:`input_devices` and :func:`output_devices` are then empty.

Threading. :class:`Recorder` and :class:`Player` run on a PortAudio stream, and PortAudio
calls their callback on its own real-time thread, every few milliseconds, with one block
of samples. The callback only copies a block in (recording) or out (playing) while
holding the object's lock, and never waits for anything else. The GUI thread starts and
stops the stream and polls :meth:`Recorder.level`, :attr:`Recorder.duration_s` and
:attr:`Player.position_s` on a timer; those take the same lock just long enough to read
a few numbers or to collect references to the recorded blocks. Stopping a stream waits for
the callback in flight to return, so :meth:`~Recorder.stop` never holds the lock while
it does. A stream factory argument (``sounddevice.InputStream`` or ``OutputStream`` by
default) lets the tests put in a fake stream that calls the callback with known blocks,
with no sound card.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ...errors import BadFileError, UserError
from ...progress import Progress, finish

#: The longest file :func:`read_audio` opens, in seconds (an hour of 16 kHz mono is 230 MB as float32).
MAX_FILE_SECONDS = 60 * 60
#: The highest sample rate a file may have (higher is damage or a crafted header).
MAX_FILE_RATE = 768_000
#: How long a :class:`Recorder` records unless told otherwise, in seconds.
MAX_RECORD_SECONDS = 10 * 60
#: The window of :meth:`Recorder.level`, in seconds.
LEVEL_WINDOW_S = 0.05
#: Peak that :func:`write_audio` scales louder audio down to.
SAFE_PEAK = 0.99

# suffix -> (libsndfile format, default subtype)
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
# Containers people often have that libsndfile cannot open: a clearer message than "format not recognised".
_UNSUPPORTED = {".m4a": "M4A/AAC", ".aac": "AAC", ".mp4": "MP4", ".wma": "WMA", ".webm": "WebM",
                ".mkv": "Matroska", ".amr": "AMR", ".ac3": "AC-3"}
_READ_BLOCK_VALUES = 2**20  # samples (all channels) read at a time: ~4 MB of float32
PROGRESS_EVERY_S = 0.2      # how often reading_audio reports


def _name(path: Path) -> str:
    return path.name or str(path)


# -- files -------------------------------------------------------------------------------------
def read_audio(path: str | os.PathLike, max_seconds: float = MAX_FILE_SECONDS) -> tuple[np.ndarray, int]:
    """Read an audio file as ``(float32 mono [T], sample_rate)`` (:func:`reading_audio`, all at once)."""
    return finish(reading_audio(path, max_seconds))


def reading_audio(path: str | os.PathLike,
                  max_seconds: float = MAX_FILE_SECONDS) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Read an audio file block by block, yielding progress; returns ``(float32 mono [T], sample_rate)``.

    Several channels are mixed down (their mean); integer formats come scaled to [-1, 1].
    Refused, each with a :class:`BadFileError` naming the file: a missing file, a folder,
    an empty or non-audio file, a format libsndfile cannot read (M4A, WMA, ...), a file
    with no samples or invalid (NaN, infinite) ones, and one longer than ``max_seconds``
    (:data:`MAX_FILE_SECONDS`, an hour, by default).
    """
    import soundfile as sf

    path = Path(path)
    name = _name(path)
    try:
        if path.is_dir():
            raise BadFileError(f"{name} is a folder, not an audio file.")
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadFileError(f"{name} does not exist.") from None
    except PermissionError:
        raise BadFileError(f"{name} cannot be read (permission denied).") from None
    if size == 0:
        raise BadFileError(f"{name} is empty (0 bytes).")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if not 0 < rate <= MAX_FILE_RATE or channels < 1:
                raise BadFileError(f"{name} is damaged or not a usable audio file "
                                   f"(it claims {rate:,} Hz and {channels} channels).")
            if frames <= 0:
                raise BadFileError(f"{name} contains no audio (0 samples).")
            if frames / rate > max_seconds:
                raise BadFileError(f"{name} is {_minutes(frames / rate)} long; the limit is "
                                   f"{_minutes(max_seconds)}. Cut it shorter first.")
            blocks = []
            per_block = max(1, _READ_BLOCK_VALUES // channels)
            done, shown = 0, time.perf_counter()
            while True:  # block by block, so a many-channel file is never all in memory at once
                block = f.read(per_block, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                blocks.append(block[:, 0].copy() if channels == 1 else block.mean(axis=1, dtype=np.float32))
                done += len(block)
                # Progress a few times a second at most: each yield lets another tab's job take the CPU.
                if time.perf_counter() - shown >= PROGRESS_EVERY_S:
                    shown = time.perf_counter()
                    yield Progress(min(done / frames, 1.0), f"Reading {name}: {_minutes(done / rate, frames / rate)} "
                                                            f"of {_minutes(frames / rate)}")
    except PermissionError:
        raise BadFileError(f"{name} cannot be read (permission denied).") from None
    except (RuntimeError, TypeError, ValueError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise BadFileError(_unreadable_message(path, exc)) from None
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise BadFileError(f"{name} contains no audio (its samples are missing; the file may be truncated).")
    if not np.isfinite(audio).all():
        raise BadFileError(f"{name} contains invalid samples (NaN or infinity).")
    return audio, rate


def _minutes(seconds: float, unit_of: float | None = None) -> str:
    """``seconds`` in seconds or minutes (the unit that ``unit_of`` seconds, if given, would get)."""
    if (seconds if unit_of is None else unit_of) < 120:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


def _unreadable_message(path: Path, exc: BaseException) -> str:
    name = _name(path)
    kind = _UNSUPPORTED.get(path.suffix.lower())
    if kind:
        return (f"{name}: {kind} files are not supported. Convert it to WAV, FLAC or OGG first "
                f"(for example: ffmpeg -i \"{name}\" \"{path.stem}.wav\").")
    detail = (getattr(exc, "error_string", None) or str(exc)).strip().rstrip(".")
    detail = detail.splitlines()[0][:200] if detail else type(exc).__name__
    return f"{name} is not an audio file that can be read ({detail}). Use WAV, FLAC or OGG."


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> float:
    """Save ``audio`` ([T] mono, or [C, T] with one row per channel) and return the gain applied.

    The format follows the suffix: ``.wav`` (16-bit PCM unless ``subtype`` says otherwise,
    e.g. ``"FLOAT"``), ``.flac`` (16-bit) or ``.ogg`` (Vorbis). Audio louder than full
    scale (peak above 1) is scaled to a peak of :data:`SAFE_PEAK` rather than clipped, and
    that factor is returned (1.0 when nothing was changed) so the caller can say so. The
    file is written beside the target and renamed into place: a failure leaves no half file.
    """
    import soundfile as sf

    path = Path(path)
    name = _name(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        shown = path.suffix or "a name without a suffix"
        raise UserError(f"Cannot save {name} as {shown}: choose a name ending in .wav, .flac or .ogg.")
    container, default_subtype = fmt
    subtype = subtype or default_subtype
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    elif data.ndim == 2:
        data = data.T
    else:
        raise ValueError(f"audio must be [T] or [C, T], not shape {tuple(np.shape(audio))}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise UserError(f"Nothing to save in {name}: the audio is empty.")
    if not np.isfinite(data).all():
        raise UserError(f"Cannot save {name}: the audio contains invalid samples (NaN or infinity).")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    peak = float(np.abs(data).max())
    gain = 1.0
    if peak > 1.0:
        gain = SAFE_PEAK / peak
        data = data * np.float32(gain)
    if not path.parent.is_dir():
        raise UserError(f"Cannot save {name}: the folder {path.parent} does not exist.")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666 honours the umask, as a plain open() would (mkstemp would make it 0600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        sf.write(str(tmp), data, sample_rate, subtype=subtype, format=container)
        os.replace(tmp, path)
    except PermissionError:
        tmp.unlink(missing_ok=True)
        raise UserError(f"Cannot save {name}: permission denied in {path.parent}.") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        detail = (getattr(exc, "error_string", None) or str(exc)).strip().splitlines()
        raise UserError(f"Cannot save {name} ({detail[0][:200] if detail else type(exc).__name__}).") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return gain


KEEP_RECORDINGS = 20


def keep_recording(audio: np.ndarray, sample_rate: int, folder: str | os.PathLike,
                   keep: int = KEEP_RECORDINGS, now: float | None = None) -> Path:
    """Keep a recording safe as ``folder/recording-YYYYmmdd-HHMMSS.wav`` (float WAV, exactly the
    samples), so that nothing recorded is lost when the tab's input changes or the app closes;
    only the newest ``keep`` recordings stay (older ones are removed). Returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    path, k = folder / f"recording-{stamp}.wav", 1
    while path.exists():
        k += 1
        path = folder / f"recording-{stamp}-{k}.wav"
    write_audio(path, audio, sample_rate, subtype="FLOAT")
    old = sorted(folder.glob("recording-*.wav"), key=lambda f: (f.stat().st_mtime, f.name))
    for stale in old[:max(0, len(old) - keep)]:
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``audio`` ([T] or [..., T]) at ``to_rate``, as float32: a polyphase filter with the
    reduced fraction to_rate/from_rate (16 kHz -> 8 kHz is up 1, down 2). Equal rates give
    the audio back (as float32) untouched."""
    from scipy.signal import resample_poly

    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {from_rate} and {to_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio
    g = math.gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // g, from_rate // g, axis=-1).astype(np.float32, copy=False)


def _tail_from(chunks: Sequence[np.ndarray], start: int) -> tuple[int, np.ndarray]:
    """(offset, samples from ``offset`` on) joining only the chunks from the one holding ``start``."""
    skipped, first = 0, 0
    while first < len(chunks) and skipped + len(chunks[first]) <= start:
        skipped += len(chunks[first])
        first += 1
    tail = np.concatenate(chunks[first:]) if first < len(chunks) else np.zeros(0, np.float32)
    return skipped, tail


def last_samples(blocks: Sequence[np.ndarray], n: int) -> np.ndarray:
    """The last ``n`` samples (along the last axis) of consecutive blocks, joining only the
    blocks needed; an empty float32 array when there are none."""
    tail, have = [], 0
    for block in reversed(blocks):
        tail.append(block)
        have += block.shape[-1]
        if have >= n:
            break
    return np.concatenate(tail[::-1], axis=-1)[..., -n:] if tail else np.zeros(0, np.float32)


class GrowingResampler:
    """:func:`resample` of a recording that keeps growing, without resampling it all again.

    A polyphase filter's output sample depends on the input within its half-length only, so
    the output is *final* once the input has gone far enough past it. Each call resamples just
    the new input, with some context before it; the result is the whole-array resample's (to
    float rounding), and the samples before :attr:`final` never change again.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        g = math.gcd(int(from_rate), int(to_rate))
        self.up, self.down = int(to_rate) // g, int(from_rate) // g
        # input samples of context: the filter's half-length (10 * max(up, down) upsampled
        # samples in scipy's default) and a little more, rounded up to whole ``down`` steps
        reach = 10 * max(self.up, self.down) / self.up + 2
        self.margin = self.down * math.ceil(reach / self.down)
        self._done_in = 0                  # input samples whose outputs are final (a multiple of down)
        self._final: list[np.ndarray] = []
        self.final = 0                     # output samples that are final
        self._tail = np.zeros(0, np.float32)

    @property
    def needed_from(self) -> int:
        """The first input sample the next :meth:`update` reads."""
        return max(self._done_in - self.margin, 0)

    def update(self, audio: np.ndarray, offset: int = 0) -> None:
        """Take the recording so far: ``audio`` is its samples from ``offset`` (at most
        :attr:`needed_from`) to the end; before them it is what earlier calls saw."""
        from scipy.signal import resample_poly

        n = offset + len(audio)
        start = self.needed_from
        if offset > start:
            raise ValueError(f"the resampler needs the input from sample {start}, not {offset}")
        if n <= start:
            return
        y = resample_poly(np.asarray(audio[start - offset:], np.float32), self.up, self.down).astype(
            np.float32, copy=False)
        y = y[(self._done_in - start) * self.up // self.down:]
        settled = max((n - self.margin) // self.down * self.down, self._done_in)
        keep = (settled - self._done_in) * self.up // self.down
        if keep:
            self._final.append(y[:keep].copy())
            self.final += keep
            self._done_in = settled
        self._tail = y[keep:]

    def output(self, start: int = 0, final_only: bool = False) -> np.ndarray:
        """The resampled recording from output sample ``start`` on (only its final part if asked)."""
        parts, skipped = [], 0
        for chunk in self._final:
            if skipped + len(chunk) > start:
                parts.append(chunk[max(start - skipped, 0):])
            skipped += len(chunk)
        if not final_only:
            parts.append(self._tail[max(start - skipped, 0):])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# -- devices -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    """One sound device as PortAudio lists it; ``index`` is what Recorder/Player take as ``device``."""

    index: int
    name: str
    channels: int  # input channels for an input device, output channels for an output device
    default_rate: float
    is_default: bool = False
    hostapi: str = ""  # PortAudio's host API ("ALSA", "Windows WASAPI", ...), when it says


def device_keys(devices: Sequence[DeviceInfo]) -> list[str]:
    """A name per device that tells them apart: the device's name, with its host API when
    another device has the same name (Windows lists one microphone under several), and its
    index when even that repeats. What a device picker shows and remembers."""
    names = [d.name for d in devices]
    keys = [d.name if names.count(d.name) == 1 else f"{d.name} ({d.hostapi or 'device ' + str(d.index)})"
            for d in devices]
    return [k if keys.count(k) == 1 else f"{k} #{d.index}" for k, d in zip(keys, devices)]


class CallbackStop(Exception):
    """Stands in for ``sounddevice.CallbackStop`` where sounddevice cannot be imported."""


def _import_sounddevice():
    import sounddevice

    return sounddevice


@functools.cache
def _load() -> tuple[Any, str | None]:
    """``(sounddevice module or None, reason it is unavailable or None)``, worked out once."""
    try:
        return _import_sounddevice(), None
    except OSError:
        return None, ("Sound is unavailable: the PortAudio library is not installed "
                      "(on Debian or Ubuntu: sudo apt-get install libportaudio2). "
                      "You can still open and save audio files.")
    except ImportError:
        return None, ("Sound is unavailable: the Python package sounddevice is not installed "
                      "(pip install sounddevice). You can still open and save audio files.")


def _sounddevice():
    sd, reason = _load()
    if sd is None:
        raise UserError(reason)
    return sd


def _default_factory(direction: str) -> Callable[..., Any]:
    """``sounddevice.InputStream`` or ``OutputStream``; a :class:`UserError` saying why where there is none."""
    sd = _sounddevice()
    reason = audio_unavailable_reason(direction)
    if reason is not None:  # clearer than PortAudio's "Error querying device -1"
        raise UserError(reason)
    return sd.InputStream if direction == "input" else sd.OutputStream


def _callback_stop() -> type[Exception]:
    """The exception a callback raises to end its stream (sounddevice's, when it can be had)."""
    sd, _ = _load()
    return sd.CallbackStop if sd is not None else CallbackStop


def _devices(direction: str) -> list[DeviceInfo]:
    sd, _ = _load()
    if sd is None:
        return []
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    try:
        listed = sd.query_devices()
        default = sd.default.device
        default_index = int(default[0] if direction == "input" else default[1])
    except Exception:  # PortAudio could not be initialised: no devices to offer
        return []
    def hostapi(d) -> str:
        try:
            return str(sd.query_hostapis(int(d["hostapi"]))["name"])
        except Exception:  # not listed (or an older sounddevice): no name
            return ""

    return [DeviceInfo(index=int(d.get("index", i)), name=str(d["name"]), channels=int(d[key]),
                       default_rate=float(d["default_samplerate"]), is_default=int(d.get("index", i)) == default_index,
                       hostapi=hostapi(d))
            for i, d in enumerate(listed) if int(d[key]) > 0]


def rescan_devices() -> None:
    """Make PortAudio list the devices again (it reads them once, when it starts): for a
    microphone plugged in since. Call it with no stream open; harmless where sound is missing."""
    sd, _ = _load()
    if sd is None:
        return
    try:
        sd._terminate()
        sd._initialize()
    except Exception:  # an older sounddevice, or PortAudio refusing: the old list stays
        pass


def input_devices() -> list[DeviceInfo]:
    """Devices that can record (microphones); empty where sound is unavailable."""
    return _devices("input")


def output_devices() -> list[DeviceInfo]:
    """Devices that can play (speakers, headphones); empty where sound is unavailable."""
    return _devices("output")


def audio_unavailable_reason(direction: str | None = None) -> str | None:
    """Why recording (``"input"``), playing (``"output"``) or either (None) cannot be offered,
    in a sentence for the user; None when there is a device to use."""
    sd, reason = _load()
    if sd is None:
        return reason
    try:
        sd.query_devices()
    except Exception as exc:
        return f"Sound is unavailable: PortAudio could not start ({_one_line(exc)})."
    inputs, outputs = input_devices(), output_devices()
    if not inputs and not outputs:
        return ("No sound devices were found (no sound card, or a machine without sound). "
                "You can still open and save audio files.")
    if direction == "input" and not inputs:
        return "No microphone or other recording device was found."
    if direction == "output" and not outputs:
        return "No speakers or other playback device were found."
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _device_default_rate(device: int | str | None, direction: str) -> int | None:
    """The device's own sample rate, to retry with when it refuses the one asked for."""
    sd, _ = _load()
    if sd is None:
        return None
    try:
        return int(round(float(sd.query_devices(device, direction)["default_samplerate"])))
    except Exception:
        return None


def _is_rate_error(exc: BaseException) -> bool:
    return "sample rate" in str(exc).lower() or "samplerate" in str(exc).lower()


def _open_stream(factory: Callable[..., Any], rate: int, direction: str, what: str,
                 prepare: Callable[[int], None], **kwargs) -> Any:
    """Open and start a stream at ``rate``, or at the device's own rate if it refuses that one.

    ``prepare(rate)`` is called before each try, so the callback finds the buffers set up for
    the rate it runs at. Any failure is a :class:`UserError` of one line.
    """
    device = kwargs.get("device")
    errors: list[Exception] = []
    rates = [rate]
    while rates:
        r = rates.pop(0)
        prepare(r)
        stream = None
        try:
            stream = factory(samplerate=r, **kwargs)
            stream.start()
            return stream
        except Exception as exc:  # PortAudioError, ValueError for a bad device, ...
            errors.append(exc)
            if stream is not None:
                try:
                    stream.close()
                except Exception:
                    pass
        if len(errors) == 1 and _is_rate_error(errors[0]):
            own = _device_default_rate(device, direction)
            if own is not None and own != rate:
                rates.append(own)
    shown = "the default device" if device is None else f"device {device}"
    raise UserError(f"Could not open the {what} ({shown}): {_one_line(errors[-1])}")


# -- recording ---------------------------------------------------------------------------------
class Level(NamedTuple):
    """Loudness of the last few milliseconds, both in [0, 1] for full-scale audio."""

    rms: float
    peak: float


class Recorder:
    """Record from an input device into a growing float32 buffer (mono, mixed down).

    ``start()`` opens the stream (a :class:`UserError` if the device cannot be opened) and
    begins a new recording; ``stop()`` ends it and may be called any number of times.
    Recording stops by itself after ``max_seconds`` (:attr:`hit_limit` then says so;
    call ``stop()`` to close the stream). If the device refuses ``sample_rate`` it records
    at its own rate and :meth:`samples` resamples to ``sample_rate``.

    ``stream_factory(samplerate=, channels=, dtype="float32", device=, callback=)`` makes the
    stream (``sounddevice.InputStream`` by default); it is called with ``callback(indata
    [frames, channels], frames, time, status)``.
    """

    def __init__(self, sample_rate: int = 16000, device: int | str | None = None, *,
                 max_seconds: float = MAX_RECORD_SECONDS, channels: int = 1,
                 stream_factory: Callable[..., Any] | None = None):
        self.sample_rate = int(sample_rate)
        self.device = device
        self.max_seconds = float(max_seconds)
        self.channels = int(channels)
        self._factory = stream_factory
        self._lock = threading.Lock()
        self._resample_lock = threading.Lock()
        self._stream = None
        self._chunks: list[np.ndarray] = []
        self._frames = 0
        self._max_frames = 0
        self._rate = self.sample_rate  # the rate the stream runs at
        self._resampler: GrowingResampler | None = None  # when the device runs at another rate
        self._recording = False
        self._stop_exc: type[Exception] = CallbackStop
        self.hit_limit = False
        self.overflows = 0  # blocks PortAudio reported as lost (the computer was too busy)

    # GUI thread -----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin a new recording (what was recorded before is dropped)."""
        self.stop()
        factory = self._factory or _default_factory("input")
        self._stop_exc = _callback_stop()

        def prepare(rate: int) -> None:
            with self._lock:
                self._chunks, self._frames, self.hit_limit, self.overflows = [], 0, False, 0
                self._rate = rate
                self._resampler = GrowingResampler(rate, self.sample_rate) if rate != self.sample_rate else None
                self._max_frames = max(1, int(round(self.max_seconds * rate)))
                self._recording = True

        try:
            stream = _open_stream(factory, self.sample_rate, "input", "microphone", prepare, channels=self.channels,
                                  dtype="float32", device=self.device, callback=self._callback)
        except BaseException:
            with self._lock:
                self._recording = False
            raise
        with self._lock:
            self._stream = stream

    def stop(self) -> None:
        """Stop recording and close the stream; what was recorded stays in :meth:`samples`."""
        with self._lock:
            stream, self._stream = self._stream, None
            self._recording = False
        if stream is not None:  # outside the lock: stopping waits for the callback, which takes it
            try:
                stream.stop()
            except Exception:  # the device may be gone already
                pass
            finally:
                try:
                    stream.close()
                except Exception:
                    pass

    @property
    def recording(self) -> bool:
        """True from ``start()`` until ``stop()`` or the length limit."""
        with self._lock:
            return self._recording

    @property
    def duration_s(self) -> float:
        with self._lock:
            return self._frames / self._rate

    def samples(self) -> np.ndarray:
        """A copy of everything recorded so far: float32 mono [T] at ``sample_rate``."""
        with self._lock:  # only collect references; joining them happens outside the lock
            chunks, resampler = list(self._chunks), self._resampler
        if resampler is not None:
            return self._resampled(resampler, chunks, 0, final_only=False)
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def samples_since(self, start: int) -> np.ndarray:
        """The recording from sample ``start`` on (float32 at ``sample_rate``), without copying
        what came before: what the live view asks for a few times a second. When the device
        records at another rate, only the new input is resampled, and only samples that are
        final (that later input cannot change) are given while recording, so that a stream
        fed from here has no seams; after ``stop()`` the rest comes too."""
        with self._lock:
            chunks, resampler, recording = list(self._chunks), self._resampler, self._recording
        if resampler is not None:
            return self._resampled(resampler, chunks, start, final_only=recording)
        skipped, tail = _tail_from(chunks, start)
        return tail[start - skipped:]

    def _resampled(self, resampler: GrowingResampler, chunks: list[np.ndarray], start: int,
                   final_only: bool) -> np.ndarray:
        with self._resample_lock:  # the GUI thread asks, and tests from others: one update at a time
            offset, tail = _tail_from(chunks, resampler.needed_from)
            resampler.update(tail, offset)
            return resampler.output(start, final_only)

    def level(self, window_s: float = LEVEL_WINDOW_S) -> Level:
        """RMS and peak of the last ``window_s`` seconds recorded (zeros before anything arrived)."""
        with self._lock:  # joins only the last few chunks
            x = last_samples(self._chunks, max(1, int(round(window_s * self._rate))))
        if x.size == 0:
            return Level(0.0, 0.0)
        return Level(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), float(np.abs(x).max()))

    # PortAudio's thread ---------------------------------------------------------------------
    def _callback(self, indata, frames, time, status) -> None:
        block = np.asarray(indata, dtype=np.float32)
        # PortAudio reuses its buffer: copy (the mean makes a new array anyway)
        mono = block[:, 0].copy() if block.ndim == 2 and block.shape[1] == 1 else (
            block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.copy())
        with self._lock:
            if status and getattr(status, "input_overflow", False):
                self.overflows += 1
            if not self._recording:
                raise self._stop_exc
            room = self._max_frames - self._frames
            if len(mono) > room:
                mono = mono[:room]
            if len(mono):
                self._chunks.append(mono)
                self._frames += len(mono)
            if self._frames >= self._max_frames:
                self.hit_limit = True
                self._recording = False
                raise self._stop_exc


# -- playing -----------------------------------------------------------------------------------
def solo_mute_gains(gains: Sequence[float], muted: Sequence[bool] = (), solo: Sequence[bool] = ()) -> list[float]:
    """The gains to play rows with, after mute and solo: when any row is soloed only soloed
    rows sound; a muted row is silent (even when soloed)."""
    muted = list(muted) + [False] * (len(gains) - len(muted))
    solo = list(solo) + [False] * (len(gains) - len(solo))
    any_solo = any(solo[: len(gains)])
    return [0.0 if muted[i] or (any_solo and not solo[i]) else float(g) for i, g in enumerate(gains)]


class Player:
    """Play float32 audio: one track [T], or several rows [C, T] mixed with per-row gains.

    ``play()`` starts from the playhead (from the start again once it has played to the
    end); ``stop()`` halts and keeps the playhead where it is, so it doubles as pause;
    ``seek(s)`` moves it, also while playing. :meth:`set_gains` takes effect on the next
    block (a few milliseconds), so mute/solo can change during playback (see
    :func:`solo_mute_gains`). The mix is clipped to [-1, 1] and sent to every output
    channel. :attr:`finished` turns True when playback reached the end.

    ``stream_factory(samplerate=, channels=, dtype="float32", device=, callback=)`` makes the
    stream (``sounddevice.OutputStream`` by default); it is called with ``callback(outdata
    [frames, channels], frames, time, status)`` and fills ``outdata``.
    """

    def __init__(self, audio: np.ndarray, sample_rate: int, device: int | str | None = None, *,
                 channels: int = 1, stream_factory: Callable[..., Any] | None = None):
        rows = np.asarray(audio, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2:
            raise ValueError(f"audio must be [T] or [C, T], not shape {rows.shape}")
        self._source = np.ascontiguousarray(rows)
        self.sample_rate = int(sample_rate)
        self.device = device
        self.channels = int(channels)
        self._factory = stream_factory
        self._lock = threading.Lock()
        self._stream = None
        self._rows = self._source  # at the stream's rate
        self._rate = self.sample_rate
        self._pos = 0  # frames at self._rate
        self._gains = np.ones(len(rows), np.float32)
        self._stop_exc: type[Exception] = CallbackStop
        self.finished = False

    @property
    def duration_s(self) -> float:
        return self._source.shape[1] / self.sample_rate

    @property
    def position_s(self) -> float:
        with self._lock:
            return self._pos / self._rate

    @property
    def playing(self) -> bool:
        with self._lock:
            return self._stream is not None and not self.finished

    def set_gains(self, gains: Sequence[float]) -> None:
        """One gain per row (0 mutes it); missing rows keep gain 1."""
        g = np.ones(len(self._source), np.float32)
        n = min(len(gains), len(g))
        g[:n] = np.asarray(list(gains)[:n], dtype=np.float32)
        with self._lock:
            self._gains = g

    def seek(self, seconds: float) -> None:
        """Move the playhead to ``seconds`` (clamped to the audio)."""
        with self._lock:
            total = self._rows.shape[1]
            self._pos = int(round(min(max(float(seconds), 0.0), total / self._rate) * self._rate))
            self._pos = min(self._pos, total)
            if self._pos < total:
                self.finished = False

    def play(self) -> None:
        """Start playing from the playhead; a :class:`UserError` if the device cannot be opened."""
        with self._lock:
            if self._stream is not None and not self.finished:
                return  # already playing
        self.stop()
        factory = self._factory or _default_factory("output")
        self._stop_exc = _callback_stop()
        with self._lock:
            if self._pos >= self._rows.shape[1]:
                self._pos = 0
            self.finished = False

        def prepare(rate: int) -> None:
            if rate == self._rate:
                return
            rows = resample(self._source, self.sample_rate, rate)  # the device refused our rate
            with self._lock:
                seconds = self._pos / self._rate
                self._rows, self._rate = rows, rate
                self._pos = min(int(round(seconds * rate)), rows.shape[1])

        stream = _open_stream(factory, self._rate, "output", "speakers", prepare, channels=self.channels,
                              dtype="float32", device=self.device, callback=self._callback)
        with self._lock:
            self._stream = stream

    def stop(self) -> None:
        """Stop playing; the playhead stays where it is."""
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:  # outside the lock: stopping waits for the callback, which takes it
            try:
                stream.stop()
            except Exception:
                pass
            finally:
                try:
                    stream.close()
                except Exception:
                    pass

    # PortAudio's thread ---------------------------------------------------------------------
    def _callback(self, outdata, frames, time, status) -> None:
        with self._lock:
            start = self._pos
            end = min(start + frames, self._rows.shape[1])
            n = max(0, end - start)
            if n:
                mix = self._gains @ self._rows[:, start:end] if len(self._gains) > 1 else \
                    self._rows[0, start:end] * self._gains[0]
                outdata[:n] = np.clip(mix, -1.0, 1.0)[:, None]
            outdata[n:] = 0
            self._pos = start + n
            if self._pos >= self._rows.shape[1]:
                self.finished = True
                raise self._stop_exc
