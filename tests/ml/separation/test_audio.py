"""Audio files, resampling, device listing, and the Recorder/Player on fake streams (no sound card)."""

from __future__ import annotations

import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import soundfile as sf

from playground.errors import BadFileError, UserError
from playground.ml.separation import audio as au


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def fresh_sounddevice(monkeypatch):
    """Forget the cached sounddevice import before and after a test that replaces it."""
    au._load.cache_clear()
    yield monkeypatch
    au._load.cache_clear()


# -- files -------------------------------------------------------------------------------------
def test_import_does_not_touch_portaudio_or_soundfile():
    code = ("import sys, playground.ml.separation.audio; "
            "assert 'sounddevice' not in sys.modules and 'soundfile' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_wav_round_trip(tmp_path):
    x = tone(440, 16000, 0.5)
    assert au.write_audio(tmp_path / "a.wav", x, 16000) == 1.0
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 16000)
    y, rate = au.read_audio(tmp_path / "a.wav")
    assert rate == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 2 / 32768  # 16-bit quantisation only

    au.write_audio(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    assert np.array_equal(au.read_audio(tmp_path / "f.wav")[0], x)


def test_a_file_is_read_block_by_block_with_its_progress(tmp_path, monkeypatch):
    x = tone(440, 8000, 3.0)
    au.write_audio(tmp_path / "long.wav", x, 8000, subtype="FLOAT")
    monkeypatch.setattr(au, "_READ_BLOCK_VALUES", 5000)
    monkeypatch.setattr(au, "PROGRESS_EVERY_S", 0.0)      # every block (a real read reports 5 times a second)
    gen = au.reading_audio(tmp_path / "long.wav")
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            y, rate = stop.value
            break
    assert rate == 8000 and np.array_equal(y, x)
    assert len(seen) == 5 and [p.fraction for p in seen] == sorted(p.fraction for p in seen)
    assert seen[0].fraction == 5000 / 24000 and seen[-1].fraction == 1.0
    assert seen[-1].text == "Reading long.wav: 3 seconds of 3 seconds"
    monkeypatch.setattr(au, "PROGRESS_EVERY_S", 3600.0)
    assert list(au.reading_audio(tmp_path / "long.wav")) == []           # a fast read says nothing


def test_flac_round_trip(tmp_path):
    x = tone(300, 8000, 0.5)
    au.write_audio(tmp_path / "a.FLAC", x, 8000)  # the suffix in any case
    assert sf.info(str(tmp_path / "a.FLAC")).format == "FLAC"
    y, rate = au.read_audio(tmp_path / "a.FLAC")
    assert rate == 8000 and y.shape == x.shape and np.abs(y - x).max() < 2 / 32768


def test_ogg_round_trip_is_close(tmp_path):
    x = tone(440, 16000, 1.0)
    au.write_audio(tmp_path / "a.ogg", x, 16000)
    info = sf.info(str(tmp_path / "a.ogg"))
    assert (info.format, info.subtype) == ("OGG", "VORBIS")
    y, rate = au.read_audio(tmp_path / "a.ogg")
    assert rate == 16000 and abs(len(y) - len(x)) <= 1024
    n = min(len(x), len(y))
    err = y[:n] - x[:n]
    snr = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum(err**2))
    assert snr > 15, snr  # lossy, but the same tone


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(300, 16000, 0.25, 0.6), tone(500, 16000, 0.25, 0.2)
    au.write_audio(tmp_path / "s.wav", np.stack([left, right]), 16000, subtype="FLOAT")
    assert sf.info(str(tmp_path / "s.wav")).channels == 2
    y, _ = au.read_audio(tmp_path / "s.wav")
    assert y.ndim == 1 and np.allclose(y, (left + right) / 2, atol=1e-6)


def test_int16_is_scaled(tmp_path):
    sf.write(str(tmp_path / "i.wav"), np.array([16384, -32768, 32767, 0], np.int16), 8000, subtype="PCM_16")
    y, rate = au.read_audio(tmp_path / "i.wav")
    assert rate == 8000 and y.dtype == np.float32
    assert np.allclose(y, [0.5, -1.0, 32767 / 32768, 0.0])


def test_write_scales_loud_audio_instead_of_clipping(tmp_path):
    x = tone(440, 8000, 0.25, amp=2.0)
    gain = au.write_audio(tmp_path / "loud.wav", x, 8000)
    assert gain == pytest.approx(au.SAFE_PEAK / np.abs(x).max())
    y, _ = au.read_audio(tmp_path / "loud.wav")
    assert np.abs(y).max() == pytest.approx(au.SAFE_PEAK, abs=1e-3)
    assert np.allclose(y, x * gain, atol=1e-4)  # scaled, not clipped


def test_write_refuses_bad_names_and_audio(tmp_path):
    x = tone(440, 8000, 0.1)
    with pytest.raises(UserError, match=r"song\.mp3.*\.wav, \.flac or \.ogg"):
        au.write_audio(tmp_path / "song.mp3", x, 8000)
    with pytest.raises(UserError, match="without a suffix"):
        au.write_audio(tmp_path / "song", x, 8000)
    with pytest.raises(UserError, match="does not exist"):
        au.write_audio(tmp_path / "nowhere" / "a.wav", x, 8000)
    with pytest.raises(UserError, match="empty"):
        au.write_audio(tmp_path / "a.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(UserError, match="NaN"):
        au.write_audio(tmp_path / "a.wav", np.array([0.0, np.nan], np.float32), 8000)
    assert list(tmp_path.iterdir()) == []  # no file, not even a temporary one


def test_bad_files_are_refused_with_their_name(tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 10)
    with pytest.raises(BadFileError, match=r"notes\.wav is not an audio file"):
        au.read_audio(tmp_path / "notes.wav")
    (tmp_path / "clips.wav").mkdir()
    with pytest.raises(BadFileError, match=r"clips\.wav is a folder"):
        au.read_audio(tmp_path / "clips.wav")
    with pytest.raises(BadFileError, match=r"gone\.wav does not exist"):
        au.read_audio(tmp_path / "gone.wav")
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(BadFileError, match=r"empty\.flac is empty"):
        au.read_audio(tmp_path / "empty.flac")
    (tmp_path / "voice.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    with pytest.raises(BadFileError, match=r"voice\.m4a: M4A/AAC files are not supported.*WAV"):
        au.read_audio(tmp_path / "voice.m4a")


def test_too_long_no_samples_and_nan_files_are_refused(tmp_path):
    au.write_audio(tmp_path / "long.wav", np.zeros(8000 * 3, np.float32), 8000)
    assert len(au.read_audio(tmp_path / "long.wav", max_seconds=3)[0]) == 24000
    with pytest.raises(BadFileError, match=r"long\.wav is 3 seconds long; the limit is 2 seconds"):
        au.read_audio(tmp_path / "long.wav", max_seconds=2)
    assert "60 minutes" in au._minutes(au.MAX_FILE_SECONDS)

    with sf.SoundFile(str(tmp_path / "none.wav"), "w", 8000, 1, "PCM_16"):
        pass  # a valid header with no samples
    with pytest.raises(BadFileError, match=r"none\.wav contains no audio"):
        au.read_audio(tmp_path / "none.wav")

    sf.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan, 0.2], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(BadFileError, match=r"nan\.wav contains invalid samples"):
        au.read_audio(tmp_path / "nan.wav")


# -- resampling --------------------------------------------------------------------------------
def test_resample_down_and_up_keeps_a_low_tone():
    x = tone(220, 16000, 1.0)
    down = au.resample(x, 16000, 8000)
    assert down.dtype == np.float32 and len(down) == 8000
    up = au.resample(down, 8000, 16000)
    assert len(up) == len(x)
    inner = slice(500, -500)  # the filter's edges aside
    assert np.abs(up[inner] - x[inner]).max() < 0.01
    assert len(au.resample(x, 16000, 44100)) == 44100  # 441/160
    same = au.resample(x, 16000, 16000)
    assert np.array_equal(same, x)
    rows = au.resample(np.stack([x, x]), 16000, 8000)
    assert rows.shape == (2, 8000)
    with pytest.raises(ValueError):
        au.resample(x, 0, 8000)


# -- devices -----------------------------------------------------------------------------------
def test_reason_when_portaudio_is_missing(fresh_sounddevice):
    def no_portaudio():
        raise OSError("PortAudio library not found")

    fresh_sounddevice.setattr(au, "_import_sounddevice", no_portaudio)
    reason = au.audio_unavailable_reason()
    assert isinstance(reason, str) and "PortAudio" in reason and "libportaudio2" in reason
    assert au.audio_unavailable_reason("input") == reason
    assert au.input_devices() == [] and au.output_devices() == []
    with pytest.raises(UserError, match="PortAudio"):
        au.Recorder().start()
    with pytest.raises(UserError, match="PortAudio"):
        au.Player(np.zeros(10, np.float32), 8000).play()
    # an injected stream still works without sounddevice (the tests' own set-up)
    rec = au.Recorder(8000, max_seconds=0.001, stream_factory=FakeInputStream.factory([]))
    rec.start()
    assert rec._stream.feed(np.ones((16, 1), np.float32)).__name__ == "CallbackStop"


def test_reason_when_sounddevice_is_not_installed(fresh_sounddevice):
    fresh_sounddevice.setitem(sys.modules, "sounddevice", None)  # import raises ImportError
    assert "pip install sounddevice" in au.audio_unavailable_reason()


def test_this_machine_without_devices_gives_user_errors(fresh_sounddevice):
    """With the real sounddevice: on a machine with no sound card, words instead of PortAudioError."""
    reason = au.audio_unavailable_reason()
    assert reason is None or isinstance(reason, str)
    if au.input_devices():
        pytest.skip("this machine has a microphone; the tests do not record from it")
    assert isinstance(au.audio_unavailable_reason("input"), str)
    with pytest.raises(UserError) as info:
        au.Recorder(16000, max_seconds=0.1).start()
    assert "\n" not in str(info.value)
    if not au.output_devices():
        with pytest.raises(UserError):
            au.Player(np.zeros(100, np.float32), 16000).play()


def _fake_sounddevice(devices, default=(-1, -1)):
    def query_devices(device=None, kind=None):
        if device is None and kind is None:
            return devices
        return next(d for d in devices if d["index"] == device)

    return types.SimpleNamespace(query_devices=query_devices, default=types.SimpleNamespace(device=list(default)),
                                 CallbackStop=au.CallbackStop)


def test_no_devices_and_device_lists(fresh_sounddevice):
    fresh_sounddevice.setattr(au, "_import_sounddevice", lambda: _fake_sounddevice([]))
    assert "No sound devices" in au.audio_unavailable_reason()
    assert au.input_devices() == []

    au._load.cache_clear()
    devices = [
        {"index": 0, "name": "Mic", "max_input_channels": 2, "max_output_channels": 0, "default_samplerate": 48000.0},
        {"index": 1, "name": "Speakers", "max_input_channels": 0, "max_output_channels": 2,
         "default_samplerate": 44100.0},
        {"index": 2, "name": "Headset", "max_input_channels": 1, "max_output_channels": 2,
         "default_samplerate": 16000.0},
    ]
    fresh_sounddevice.setattr(au, "_import_sounddevice", lambda: _fake_sounddevice(devices, default=(2, 1)))
    assert au.input_devices() == [au.DeviceInfo(0, "Mic", 2, 48000.0, False),
                                  au.DeviceInfo(2, "Headset", 1, 16000.0, True)]
    assert au.output_devices() == [au.DeviceInfo(1, "Speakers", 2, 44100.0, True),
                                   au.DeviceInfo(2, "Headset", 2, 16000.0, False)]
    assert au.audio_unavailable_reason() is None and au.audio_unavailable_reason("input") is None

    au._load.cache_clear()
    fresh_sounddevice.setattr(au, "_import_sounddevice", lambda: _fake_sounddevice(devices[1:2], default=(-1, 1)))
    assert au.audio_unavailable_reason("input") == "No microphone or other recording device was found."
    assert au.audio_unavailable_reason("output") is None


# -- fake streams ------------------------------------------------------------------------------
class FakeInputStream:
    """Calls the callback with the blocks a test feeds it, as PortAudio's thread would."""

    def __init__(self, made, refuse_rates=(), *, samplerate, channels, dtype, device, callback):
        if samplerate in refuse_rates:
            raise RuntimeError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")
        self.samplerate, self.channels, self.dtype, self.device = samplerate, channels, dtype, device
        self.callback = callback
        self.started = self.closed = False
        self.stop_calls = 0
        made.append(self)

    @classmethod
    def factory(cls, made, refuse_rates=()):
        return lambda **kw: cls(made, refuse_rates, **kw)

    def start(self):
        self.started = True

    def stop(self):
        self.stop_calls += 1

    def close(self):
        self.closed = True

    def feed(self, block):
        """Returns the class of the exception the callback raised to end the stream, or None."""
        try:
            self.callback(block, len(block), None, None)
        except Exception as exc:
            return type(exc)
        return None


class FakeOutputStream(FakeInputStream):
    def pull(self, frames):
        """One block from the callback, and whether it asked to stop."""
        out = np.full((frames, self.channels), np.nan, np.float32)
        return out, self.feed_out(out)

    def feed_out(self, out):
        try:
            self.callback(out, len(out), None, None)
        except Exception as exc:
            return type(exc)
        return None


def test_recorder_gets_exactly_the_blocks(tmp_path):
    made = []
    rec = au.Recorder(16000, device=3, stream_factory=FakeInputStream.factory(made))
    rec.start()
    (stream,) = made
    assert (stream.samplerate, stream.channels, stream.dtype, stream.device) == (16000, 1, "float32", 3)
    assert stream.started and rec.recording
    rng = np.random.default_rng(0)
    blocks = [rng.uniform(-1, 1, (n, 1)).astype(np.float32) for n in (160, 333, 1024)]
    for b in blocks:
        buffer = b.copy()
        assert stream.feed(buffer) is None
        buffer[:] = 7  # PortAudio reuses its buffer: the recorder must have copied it
    assert np.array_equal(rec.samples(), np.concatenate(blocks)[:, 0])
    assert rec.duration_s == pytest.approx((160 + 333 + 1024) / 16000)
    rec.stop()
    assert stream.stop_calls == 1 and stream.closed and not rec.recording
    rec.stop()  # again: nothing happens
    assert len(rec.samples()) == 1517  # kept after stop

    rec.start()  # a new recording on a new stream
    assert len(made) == 2 and len(rec.samples()) == 0


def test_recorder_mixes_channels_down():
    made = []
    rec = au.Recorder(8000, channels=2, stream_factory=FakeInputStream.factory(made))
    rec.start()
    made[0].feed(np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 0.0]], np.float32))
    assert np.array_equal(rec.samples(), np.array([0.5, 0.5, -0.5], np.float32))


def test_recorder_stops_at_the_length_limit():
    made = []
    rec = au.Recorder(1000, max_seconds=0.25, stream_factory=FakeInputStream.factory(made))
    rec.start()
    stream = made[0]
    block = np.ones((100, 1), np.float32)
    assert stream.feed(block) is None and stream.feed(block) is None
    ended = stream.feed(block)
    assert ended is not None and ended.__name__ == "CallbackStop"  # the stream is told to end
    assert len(rec.samples()) == 250 and rec.duration_s == pytest.approx(0.25)
    assert rec.hit_limit and not rec.recording
    assert stream.feed(block) is not None and len(rec.samples()) == 250  # nothing more is kept
    rec.stop()
    assert stream.closed


def test_recorder_level_is_the_last_50_ms():
    made = []
    rec = au.Recorder(1000, stream_factory=FakeInputStream.factory(made))
    assert rec.level() == (0.0, 0.0)
    rec.start()
    assert rec.level() == (0.0, 0.0)
    stream = made[0]
    stream.feed(np.full((200, 1), 0.5, np.float32))
    lv = rec.level()
    assert lv.rms == pytest.approx(0.5) and lv.peak == pytest.approx(0.5)
    stream.feed(np.full((30, 1), 0.1, np.float32))  # the last 50 ms: 20 at 0.5 and 30 at 0.1
    lv = rec.level()
    assert lv.peak == pytest.approx(0.5)
    assert lv.rms == pytest.approx(np.sqrt((20 * 0.25 + 30 * 0.01) / 50))
    stream.feed(np.full((10, 1), -0.2, np.float32))
    stream.feed(np.full((40, 1), 0.1, np.float32))
    assert rec.level().peak == pytest.approx(0.2)


def test_recorder_device_errors_are_one_line():
    def broken(**_kw):
        raise RuntimeError("Error opening InputStream: Device unavailable [PaErrorCode -9985]\nmore detail")

    with pytest.raises(UserError) as info:
        au.Recorder(16000, device=5, stream_factory=broken).start()
    msg = str(info.value)
    assert "\n" not in msg and "microphone" in msg and "device 5" in msg and "Device unavailable" in msg


def test_recorder_falls_back_to_the_devices_rate(monkeypatch):
    made = []
    monkeypatch.setattr(au, "_device_default_rate", lambda device, direction: 48000)
    rec = au.Recorder(16000, max_seconds=1, stream_factory=FakeInputStream.factory(made, refuse_rates=(16000,)))
    rec.start()
    (stream,) = made
    assert stream.samplerate == 48000
    x = tone(300, 48000, 0.5)
    stream.feed(x[:, None])
    assert rec.duration_s == pytest.approx(0.5)
    y = rec.samples()
    assert len(y) == 8000 and np.abs(y[300:-300] - tone(300, 16000, 0.5)[300:-300]).max() < 0.01


def test_recorder_is_safe_across_threads():
    made = []
    rec = au.Recorder(16000, stream_factory=FakeInputStream.factory(made))
    rec.start()
    stream = made[0]

    def audio_thread():
        for i in range(500):
            stream.feed(np.full((64, 1), (i % 10) / 10, np.float32))

    t = threading.Thread(target=audio_thread)
    t.start()
    while t.is_alive():  # the GUI timer's polling, as fast as it goes
        rec.level()
        n = len(rec.samples())
        assert n % 64 == 0 and n <= 500 * 64
    t.join()
    assert len(rec.samples()) == 500 * 64


# -- playing -----------------------------------------------------------------------------------
def test_player_outputs_the_samples_then_finishes():
    made = []
    x = tone(440, 8000, 0.1)  # 800 samples
    p = au.Player(x, 8000, device=2, stream_factory=FakeOutputStream.factory(made))
    assert p.duration_s == pytest.approx(0.1) and p.position_s == 0 and not p.playing
    p.play()
    (stream,) = made
    assert (stream.samplerate, stream.channels, stream.dtype, stream.device) == (8000, 1, "float32", 2)
    assert p.playing
    out = []
    for _ in range(3):
        block, ended = stream.pull(256)
        assert ended is None
        out.append(block)
    assert p.position_s == pytest.approx(768 / 8000)
    block, ended = stream.pull(256)
    assert ended.__name__ == "CallbackStop" and p.finished and not p.playing
    out.append(block)
    played = np.concatenate(out)[:, 0]
    assert np.array_equal(played[:800], x) and np.all(played[800:] == 0)
    assert p.position_s == pytest.approx(0.1)

    p.play()  # at the end: again from the start, on a new stream
    assert stream.closed and len(made) == 2 and not p.finished and p.position_s == 0
    assert np.array_equal(made[1].pull(100)[0][:, 0], x[:100])
    p.stop()
    assert made[1].closed and p.position_s == pytest.approx(100 / 8000)  # stop keeps the playhead


def test_player_seek():
    made = []
    x = np.arange(1000, dtype=np.float32) / 1000
    p = au.Player(x, 1000, stream_factory=FakeOutputStream.factory(made))
    p.seek(0.5)
    assert p.position_s == pytest.approx(0.5)
    p.play()
    assert np.array_equal(made[0].pull(10)[0][:, 0], x[500:510])
    p.seek(0.9)  # while playing
    assert np.array_equal(made[0].pull(10)[0][:, 0], x[900:910])
    p.seek(-3)
    assert p.position_s == 0
    p.seek(99)
    assert p.position_s == pytest.approx(1.0)
    block, ended = made[0].pull(10)
    assert ended is not None and np.all(block == 0) and p.finished
    p.seek(0.2)
    assert not p.finished


def test_player_gains_mute_and_solo():
    made = []
    a, b = np.full(100, 0.25, np.float32), np.full(100, -0.5, np.float32)
    p = au.Player(np.stack([a, b]), 1000, channels=2, stream_factory=FakeOutputStream.factory(made))
    p.play()
    stream = made[0]
    block = stream.pull(10)[0]
    assert block.shape == (10, 2) and np.allclose(block, 0.25 - 0.5)  # both rows, every channel
    p.set_gains(au.solo_mute_gains([1.0, 1.0], muted=[False, False], solo=[True, False]))
    assert np.allclose(stream.pull(10)[0], 0.25)
    p.set_gains(au.solo_mute_gains([1.0, 0.5], muted=[True, False]))
    assert np.allclose(stream.pull(10)[0], -0.25)
    p.set_gains([4.0, 0.0])
    assert np.allclose(stream.pull(10)[0], 1.0)  # the mix is clipped to full scale
    p.set_gains([0.0])  # a short list: the rest keep gain 1
    assert np.allclose(stream.pull(10)[0], -0.5)

    assert au.solo_mute_gains([1, 2, 3], solo=[False, True, True], muted=[False, False, True]) == [0.0, 2.0, 0.0]
    assert au.solo_mute_gains([0.5, 1.0]) == [0.5, 1.0]


def test_player_device_errors_are_one_line():
    def broken(**_kw):
        raise ValueError("No output device matching 'nope'")

    with pytest.raises(UserError, match=r"^Could not open the speakers \(device nope\): No output device"):
        au.Player(np.zeros(10, np.float32), 8000, device="nope", stream_factory=broken).play()


def test_samples_since_gives_the_tail_of_the_recording_without_the_rest():
    from playground.ml.separation.audio import Recorder

    rec = Recorder(sample_rate=8000, stream_factory=lambda **kw: None)
    blocks = [np.arange(k * 10, k * 10 + 10, dtype=np.float32) for k in range(5)]
    rec._chunks.extend(blocks)
    whole = np.concatenate(blocks)
    for start in (0, 5, 10, 23, 49, 50, 70):
        np.testing.assert_array_equal(rec.samples_since(start), whole[start:])


@pytest.mark.parametrize("from_rate,to_rate", [(48000, 8000), (44100, 8000), (16000, 8000), (8000, 16000)])
def test_a_growing_recording_is_resampled_piece_by_piece_as_a_whole(from_rate, to_rate):
    rng = np.random.default_rng(from_rate)
    whole = (rng.standard_normal(int(1.3 * from_rate)) * 0.2).astype(np.float32)
    rs = au.GrowingResampler(from_rate, to_rate)
    seen_final: list[np.ndarray] = []
    cut = 0
    while cut < len(whole):
        cut = min(len(whole), cut + int(rng.integers(1, from_rate // 7)))
        offset = rs.needed_from
        rs.update(whole[offset:cut], offset)
        expected = au.resample(whole[:cut], from_rate, to_rate)
        got = rs.output()
        assert len(got) == len(expected)
        np.testing.assert_allclose(got, expected, atol=2e-6)
        seen_final.append(rs.output(final_only=True))
        assert rs.final <= len(got)
    # what was final stays as it was
    last = rs.output()
    for earlier in seen_final:
        np.testing.assert_array_equal(last[:len(earlier)], earlier)
    assert rs.final > 0.9 * len(last)
    np.testing.assert_array_equal(rs.output(start=100), last[100:])
    with pytest.raises(ValueError):
        rs.update(whole[rs.needed_from + 1:], rs.needed_from + 1)


def test_live_reading_of_a_resampled_recording_gives_final_samples_only_until_stop(monkeypatch):
    made = []
    monkeypatch.setattr(au, "_device_default_rate", lambda device, direction: 48000)
    rec = au.Recorder(8000, max_seconds=5, stream_factory=FakeInputStream.factory(made, refuse_rates=(8000,)))
    rec.start()
    (stream,) = made
    x = (np.random.default_rng(3).standard_normal(48000) * 0.1).astype(np.float32)
    sent = []
    for k in range(0, len(x), 2400):      # 50 ms blocks, read as the live view reads them
        stream.feed(x[k:k + 2400, None])
        new = rec.samples_since(sum(map(len, sent)))
        sent.append(new)
    assert sum(map(len, sent)) < 8000     # the last few samples are not final while recording
    rec.stop()
    sent.append(rec.samples_since(sum(map(len, sent))))
    whole = np.concatenate(sent)
    np.testing.assert_allclose(whole, au.resample(x, 48000, 8000), atol=2e-6)   # no seams
    np.testing.assert_allclose(rec.samples(), whole, atol=0)


def test_recordings_are_kept_exactly_and_only_the_newest_stay(tmp_path):
    x = np.clip(np.random.default_rng(0).standard_normal(1234) * 0.3, -1, 1).astype(np.float32)  # as a microphone gives
    first = au.keep_recording(x, 8000, tmp_path / "rec", keep=3, now=1_700_000_000)
    data, rate = sf.read(first, dtype="float32")
    assert rate == 8000 and np.array_equal(data, x) and first.name.startswith("recording-")
    again = au.keep_recording(x, 8000, tmp_path / "rec", keep=3, now=1_700_000_000)   # the same second
    assert again != first and again.exists() and first.exists()
    for k in range(4):
        au.keep_recording(x[:100], 8000, tmp_path / "rec", keep=3, now=1_700_000_100 + k)
    kept = sorted((tmp_path / "rec").glob("recording-*.wav"))
    assert len(kept) == 3 and first not in kept


def test_devices_with_the_same_name_are_told_apart():
    devices = [au.DeviceInfo(0, "Mic", 1, 48000.0, hostapi="MME"),
               au.DeviceInfo(4, "Mic", 1, 48000.0, hostapi="WASAPI"),
               au.DeviceInfo(7, "Headset", 1, 16000.0), au.DeviceInfo(8, "Line", 2, 44100.0, hostapi="ALSA"),
               au.DeviceInfo(9, "Line", 2, 44100.0, hostapi="ALSA")]
    keys = au.device_keys(devices)
    assert keys == ["Mic (MME)", "Mic (WASAPI)", "Headset", "Line (ALSA) #8", "Line (ALSA) #9"]
    assert len(set(keys)) == len(keys)


def test_last_samples_joins_only_the_blocks_it_needs():
    blocks = [np.arange(k * 10, k * 10 + 10, dtype=np.float32) for k in range(5)]
    whole = np.concatenate(blocks)
    for n in (1, 10, 15, 50, 80):
        np.testing.assert_array_equal(au.last_samples(blocks, n), whole[-n:])
    two = [np.stack([b, -b]) for b in blocks]                    # [C, m] blocks: along the last axis
    np.testing.assert_array_equal(au.last_samples(two, 15), np.stack([whole, -whole])[:, -15:])
    assert au.last_samples([], 5).size == 0
