"""The Separation tab, offscreen and without a sound card: fake PortAudio streams stand in for the devices."""

import math
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from playground.app import AppContext, MainWindow
from playground.jobs import JobState
from playground.ml.separation import audio, demos, loaders
from playground.ml.separation.model import ConvTasNet, ConvTasNetConfig
from playground.panels import separation as panel_module
from playground.panels.separation import SeparationPanel, level_percent
from playground.settings import Settings


def tiny(causal: bool = False, n_src: int = 2) -> ConvTasNet:
    torch.manual_seed(0)
    cfg = ConvTasNetConfig(n_src=n_src, N=16, L=8, B=8, H=16, Sc=8, X=2, R=1, sample_rate=8000,
                           norm="cLN" if causal else "gLN", causal=causal)
    return ConvTasNet(cfg).eval()


class FakeStream:
    """A PortAudio stream stand-in: a thread calls the callback with blocks, faster than real time."""

    def __init__(self, *, samplerate, channels, dtype, device, callback, source=None, block=160, pause_s=0.004):
        self.samplerate, self.channels, self.callback, self.device = samplerate, channels, callback, device
        self.source, self.block, self.pause_s = source, block, pause_s
        self.played: list[np.ndarray] = []
        self._halt = threading.Event()
        self._thread = None
        self.pos = 0

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._halt.is_set():
            try:
                if self.source is not None:  # an input stream: give the next block of the known signal
                    block = self.source[self.pos:self.pos + self.block]
                    if block.size == 0:
                        block = np.zeros(self.block, np.float32)
                    self.pos += block.size
                    self.callback(block[:, None].copy(), block.size, None, None)
                else:  # an output stream: take what the player writes
                    out = np.full((self.block, self.channels), np.nan, np.float32)
                    self.callback(out, self.block, None, None)
                    self.played.append(out[:, 0].copy())
            except Exception:  # CallbackStop (or anything): the stream ends, as PortAudio's does
                return
            time.sleep(self.pause_s)

    def stop(self):
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

    def close(self):
        self.stop()


KNOWN = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000 * 20) / 8000)).astype(np.float32)


class Factories:
    def __init__(self):
        self.outputs: list[FakeStream] = []
        self.inputs: list[FakeStream] = []

    def input(self, **kwargs):
        stream = FakeStream(source=KNOWN, **kwargs)
        self.inputs.append(stream)
        return stream

    def output(self, **kwargs):
        stream = FakeStream(block=400, **kwargs)
        self.outputs.append(stream)
        return stream


@pytest.fixture
def fakes(monkeypatch):
    f = Factories()
    monkeypatch.setattr(panel_module, "INPUT_STREAM_FACTORY", f.input)
    monkeypatch.setattr(panel_module, "OUTPUT_STREAM_FACTORY", f.output)
    monkeypatch.setattr(audio, "audio_unavailable_reason", lambda direction=None: None)
    return f


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    model, causal = tiny(), tiny(causal=True)
    monkeypatch.setattr(loaders, "load_default", lambda: loaders.describe(model, "tiny", "test"))
    monkeypatch.setattr(loaders, "load_default_causal", lambda: loaders.describe(causal, "tiny-causal", "test"))
    windows = []

    def make():
        win = MainWindow(AppContext(Settings(tmp_path / "s.json")))
        qtbot.addWidget(win)
        win.show()
        p = win.panel(SeparationPanel)
        win.tabs.setCurrentWidget(p)
        # the first demo is loaded and separated by itself
        qtbot.waitUntil(lambda: p.model is not None and p.input is not None and p.result is not None
                        and not p.running, timeout=20000)
        windows.append(win)
        return win, p

    yield make
    for win in windows:
        win.close()


@pytest.fixture
def panel(make_window):
    return make_window()[1]


def separate(qtbot, p):
    p.start()
    assert p.running
    qtbot.waitUntil(lambda: not p.running, timeout=30000)
    assert p.job.state == JobState.FINISHED, p.controls.status.text()


def test_the_tab_opens_with_a_demo_separated_and_separate_scores_each_voice(qtbot, panel):
    p = panel
    first = demos.list_demos()[0]
    assert p.input.name == first.title and p.input.sources is not None
    assert len(p.rows.rows) == 3 and p.job.state == JobState.FINISHED  # separated by itself on opening
    assert p.result.si_snri is not None and "SI-SNRi" in p.controls.status.text()
    separate(qtbot, p)
    assert [r.name_label.text() for r in p.rows.rows] == ["<b>Mixture</b>", "<b>Voice 1</b>", "<b>Voice 2</b>"]
    for row in p.rows.rows[1:]:
        m = re.fullmatch(r"SI-SNRi ([+-]\d+\.\d) dB", row.score_label.text())
        assert m and math.isfinite(float(m.group(1)))
    assert p.result.sources.shape == (2, p.input.mixture.size)
    assert all(math.isfinite(v) for v in p.result.si_snri)
    assert p.learn.value_labels("si_snri1")[0].text() not in ("", "–")
    assert p.strip.captions == ["encoder output w", "mask m1", "mask m2"] and p.strip.isVisibleTo(p)
    assert "w ⊙ m_c" in p.strip.title.text()
    # the Learn panel's diagram: encoder -> w -> masks -> decoder, over this model's insides
    assert p.learn.figure is p.diagram and p.learn.isAncestorOf(p.diagram)
    captions = p.diagram.captions()
    assert captions[1] == "Encoder U: 16 filters × 8 samples, stride 4" and captions[2].startswith("w: 16 basis")
    assert captions[4].startswith("m1: mean ") and len(p.diagram.state.voices) == 2
    assert p.diagram.state.w is p.result.inside.w
    p.diagram.resize(300, 430)
    assert not p.diagram.grab().toImage().isNull()
    assert p.result.inside.w.shape[0] == 16 and p.result.inside.masks.shape[:2] == (2, 16)
    qtbot.waitUntil(lambda: p.rows.rows[0].image.image is not None, timeout=5000)  # spectrograms drawn
    assert p.rows.rows[2].image.image is not None


def test_a_three_voice_model_gives_three_voice_rows(qtbot, panel, tmp_path):
    combo = panel.picker.combo
    assert combo.itemText(1) == "Causal TTS voices model (embedded, live mode's)"  # offered for offline use too
    path = loaders.save_separator(tmp_path / "three.safetensors", tiny(n_src=3))
    panel.picker.open_path(str(path))
    qtbot.waitUntil(lambda: panel.model.n_src == 3, timeout=10000)
    info = panel.picker.info_label.text()
    assert "Speakers: 3" in info and "Sample rate: 8000 Hz" in info and "parameters" in info
    separate(qtbot, panel)
    assert len(panel.rows.rows) == 4 and panel.result.si_snri is None  # the demo has two true voices
    assert panel.strip.captions[-1] == "mask m3"


def test_play_moves_the_playhead_and_solo_mute_set_the_gains(qtbot, panel, fakes):
    p = panel
    separate(qtbot, p)
    assert p.gains() == [0.0, 1.0, 1.0]  # with voices, the mixture starts muted
    p.rows.rows[2].solo_button.click()
    assert p.gains() == [0.0, 0.0, 1.0]
    assert p.play()
    qtbot.waitUntil(lambda: p.rows.rows[0].playhead_s > 0.2, timeout=5000)
    assert p.rows.rows[1].playhead_s > 0.2 and p.play_button.text() == "Stop"
    played = np.concatenate(fakes.outputs[-1].played)
    start = 0
    assert np.allclose(played[start:start + 400], p.result.sources[1][:400], atol=1e-6)  # voice 2 alone
    p.rows.rows[2].mute_button.click()  # muted beats solo
    assert p.gains() == [0.0, 0.0, 0.0] and p.player._gains.tolist() == [0.0, 0.0, 0.0]
    p.toggle_play()
    assert p.play_button.text() == "Play"
    p.play_row(1)
    assert p.gains() == [0.0, 1.0, 0.0]
    p.stop_playing()
    p.seek(1.5)
    assert abs(p.player.position_s - 1.5) < 1e-3 and abs(p.rows.rows[2].playhead_s - 1.5) < 1e-6


def test_a_click_on_a_waveform_moves_the_playhead(qtbot, panel):
    from PySide6.QtCore import QPoint, Qt

    row = panel.rows.rows[0]
    qtbot.waitUntil(lambda: row.wave.width() > 50, timeout=5000)
    vb = row.wave.getPlotItem().getViewBox()
    centre = vb.sceneBoundingRect().center()
    at = row.wave.mapFromScene(centre)
    qtbot.mouseClick(row.wave.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(at.x(), at.y()))
    expected = vb.mapSceneToView(centre).x()
    qtbot.waitUntil(lambda: row.playhead_s > 0, timeout=3000)
    assert abs(row.playhead_s - expected) < 0.05


def test_play_without_a_sound_card_says_why(qtbot, panel, monkeypatch):
    monkeypatch.setattr(audio, "_default_factory",
                        lambda direction: (_ for _ in ()).throw(audio.UserError("No speakers were found.")))
    assert not panel.play()
    assert panel.controls.status.text() == "No speakers were found." and "c62828" in panel.controls.status.styleSheet()


def test_save_writes_a_readable_wav(qtbot, panel, tmp_path, monkeypatch):
    separate(qtbot, panel)
    path = panel.save_row(1, str(tmp_path / "voice1.wav"))
    data, rate = sf.read(path, dtype="float32")
    assert rate == 8000 and data.shape == (panel.input.mixture.size,)
    assert np.allclose(data, panel.result.sources[0], atol=2e-4)
    # through the dialog, with the suffix of the chosen filter added
    monkeypatch.setattr(panel_module.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "mix"), "FLAC (*.flac)"))
    assert panel.save_row(0) == str(tmp_path / "mix.flac")
    assert sf.info(str(tmp_path / "mix.flac")).format == "FLAC"
    assert panel.save_row(0, str(tmp_path / "mix.mp3")) is None
    assert "c62828" in panel.controls.status.styleSheet() and ".wav, .flac or .ogg" in panel.controls.status.text()


def test_record_takes_known_samples_and_the_meter_moves(qtbot, make_window, fakes):
    _, p = make_window()
    assert p.record_button.isEnabled() and not p.record_reason.isVisible()
    levels = []
    p.level.valueChanged.connect(levels.append)
    assert p.start_recording()
    assert p.record_button.text() == "Stop recording"
    qtbot.waitUntil(lambda: p.recorder is not None and p.recorder.duration_s > 0.5, timeout=10000)
    qtbot.waitUntil(lambda: bool(levels) and max(levels) > 80, timeout=5000)  # a 0.5 peak: -6 dB
    qtbot.waitUntil(lambda: p.rows.rows[0].curve.xData is not None and p.rows.rows[0].curve.xData.size > 0,
                    timeout=5000)  # the waveform grows while recording
    p.toggle_record()
    assert p.recorder is None and p.record_button.text() == "Record" and p.level.value() == 0
    got = p.input.mixture
    assert got.size > 4000 and np.array_equal(got, KNOWN[:got.size])
    assert p.input.sources is None and len(p.rows.rows) == 1
    separate(qtbot, p)  # a recording separates like any input (no scores: no true voices)
    assert len(p.rows.rows) == 3 and p.rows.rows[1].score_label.text() == ""


def test_recording_stops_at_the_length_limit(qtbot, make_window, fakes):
    _, p = make_window()
    p.max_seconds.setValue(1)
    assert p.start_recording()
    qtbot.waitUntil(lambda: p.recorder is None, timeout=10000)
    assert p.input.mixture.size == 16000 and p.input.rate == 16000 and "limit" in p.controls.status.text()


def test_a_recording_of_nothing_gives_the_previous_input_back(qtbot, make_window, fakes, monkeypatch):
    class Silent:  # a device that never delivers a block
        def __init__(self, **kwargs):
            pass

        start = stop = close = lambda self: None

    monkeypatch.setattr(panel_module, "INPUT_STREAM_FACTORY", Silent)
    _, p = make_window()
    before = p.input
    assert p.start_recording() and p.input is not before
    p.stop_recording()
    assert p.input is before and p.controls.status.text() == "Nothing was recorded."


def test_without_a_microphone_record_is_disabled_with_the_reason(qtbot, make_window, monkeypatch):
    monkeypatch.setattr(audio, "audio_unavailable_reason", lambda direction=None: "No microphone was found.")
    _, p = make_window()
    assert not p.record_button.isEnabled() and not p.device.isEnabled()
    assert p.record_reason.isVisible() and p.record_reason.text() == "No microphone was found."
    p.toggle_record()  # (Ctrl+R) does nothing but say why
    assert p.recorder is None and "No microphone" in p.controls.status.text()
    assert p.controls.start_button.isEnabled()  # everything else works


def test_live_mode_separates_while_recording(qtbot, make_window, fakes):
    _, p = make_window()
    p.live.setChecked(True)
    qtbot.waitUntil(lambda: p.live_model() is not None, timeout=10000)
    assert "latency" in p.live_info.text()
    assert p.start_recording() and p.running
    assert len(p.rows.rows) == 3
    qtbot.waitUntil(lambda: p.live_samples() > 2000, timeout=10000)
    first = p.live_samples()
    qtbot.waitUntil(lambda: p.live_samples() > first + 2000, timeout=10000)  # the voices grow as it records
    qtbot.waitUntil(lambda: "compute" in p.live_info.text(), timeout=5000)
    assert re.search(r"latency up to \d+ ms = \d+\.\d ms \(the model\) \+ 50 ms", p.live_info.text())
    # the Learn panel's diagram follows the last seconds while recording
    qtbot.waitUntil(lambda: p.diagram.state is not None and p.diagram.state.live, timeout=10000)
    look = p.diagram.state
    assert look.masks.shape[0] == 2 and look.mixture.size > 0 and "last" in p.diagram.captions()[0]
    p.stop_recording()
    qtbot.waitUntil(lambda: not p.running, timeout=10000)
    assert p.job.state == JobState.FINISHED, p.controls.status.text()
    n = p.input.mixture.size
    assert n > 4000 and np.array_equal(p.input.mixture, KNOWN[:n])
    assert p.result.sources.shape == (2, n) and np.isfinite(p.result.sources).all()
    # streaming gives the offline causal model's output
    with torch.inference_mode():
        offline = p.live_model()(torch.from_numpy(p.input.mixture)[None])[0].numpy()
    assert np.allclose(p.result.sources, offline, atol=1e-4)
    assert p.strip.captions == ["encoder output w", "mask m1", "mask m2"]
    assert p.learn.value_labels("rtf")[0].text() not in ("", "–")


def test_stop_ends_live_mode_and_the_recording(qtbot, make_window, fakes):
    _, p = make_window()
    p.live.setChecked(True)
    qtbot.waitUntil(lambda: p.live_model() is not None, timeout=10000)
    assert p.start_recording()
    qtbot.waitUntil(lambda: p.live_samples() > 1000, timeout=10000)
    p.stop()
    qtbot.waitUntil(lambda: not p.running, timeout=5000)
    assert p.recorder is None and p.job.state == JobState.CANCELLED
    assert p.result is not None and p.result.sources.shape[1] == p.input.mixture.size > 0


def test_a_bad_audio_file_is_one_line_and_nothing_is_lost(qtbot, panel, tmp_path):
    before = panel.input
    bad = tmp_path / "song.wav"
    bad.write_bytes(b"RIFF....WAVEnot really")
    job = panel.open_audio(str(bad))
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    status = panel.controls.status
    assert job.state == JobState.FAILED and "song.wav" in status.text() and "\n" not in status.text()
    assert "c62828" in status.styleSheet() and "Traceback" not in status.text()
    assert panel.input is before
    good = tmp_path / "tone.flac"
    sf.write(str(good), KNOWN[:4000], 8000)
    job = panel.open_audio(str(good))
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    assert panel.input.name == "tone.flac" and panel.input.mixture.size == 4000


@pytest.fixture
def long_file(tmp_path, monkeypatch):
    """A 10 s file read from a slow disk: 200 blocks of 400 samples, each reported, 20 ms each."""
    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros(80000, np.float32), 8000)
    monkeypatch.setattr(audio, "_READ_BLOCK_VALUES", 400)
    monkeypatch.setattr(audio, "PROGRESS_EVERY_S", 0.0)
    reading = audio.reading_audio

    def slow_reading(*args):
        inner = reading(*args)
        while True:
            try:
                item = next(inner)
            except StopIteration as stop:
                return stop.value
            time.sleep(0.02)
            yield item

    monkeypatch.setattr(audio, "reading_audio", slow_reading)
    return path


def test_opening_a_long_file_shows_its_progress_and_stop_stops_it(qtbot, panel, long_file):
    before = panel.input
    job = panel.open_audio(str(long_file))
    qtbot.waitUntil(lambda: panel.controls.status.text().startswith("Reading long.wav:"), timeout=10000)
    assert panel.controls.stop_button.isEnabled() and 0 < panel.controls.progress.value() < 1000
    panel.controls.stop_button.click()
    qtbot.waitUntil(lambda: job.is_done, timeout=5000)
    assert job.state == JobState.CANCELLED and panel.input is before
    assert panel.controls.status.text() == f"Stopped opening long.wav. {before.name} is still open."
    assert not panel.controls.stop_button.isEnabled() and panel.controls.progress.value() == 0


def test_recording_while_a_file_opens_drops_the_file(qtbot, make_window, fakes, long_file):
    _, p = make_window()
    job = p.open_audio(str(long_file))
    qtbot.waitUntil(lambda: p.controls.status.text().startswith("Reading long.wav:"), timeout=10000)
    assert p.start_recording()
    qtbot.waitUntil(lambda: job.is_done, timeout=5000)
    qtbot.waitUntil(lambda: p.recorder.duration_s > 0.3, timeout=10000)
    p.stop_recording()
    assert job.state == JobState.CANCELLED and p.input.name != "long.wav"
    assert np.array_equal(p.input.mixture, KNOWN[:p.input.mixture.size])
    assert not p.controls.stop_button.isEnabled()


def test_settings_are_remembered_across_windows(qtbot, make_window, fakes, monkeypatch):
    mics = [audio.DeviceInfo(0, "Built-in", 2, 48000.0, True), audio.DeviceInfo(3, "USB mic", 1, 16000.0)]
    monkeypatch.setattr(audio, "input_devices", lambda: mics)
    win, p = make_window()
    p.device.setCurrentIndex(p.device.findData("USB mic"))
    p.device.activated.emit(p.device.currentIndex())
    p.demo.setCurrentIndex(1)
    p.load_demo()
    p.max_seconds.setValue(17)
    p.window_s.setValue(4.0)
    p.live.setChecked(True)
    win.close()
    _, p2 = make_window()
    assert p2.demo.currentIndex() == 1 and p2.max_seconds.value() == 17 and p2.window_s.value() == 4.0
    assert p2.live.isChecked() and p2.device.currentData() == "USB mic"
    qtbot.waitUntil(lambda: p2.input is not None and p2.input.name == demos.list_demos()[1].title, timeout=10000)
    qtbot.waitUntil(lambda: p2.live_model() is not None, timeout=10000)


def test_the_meter_scale():
    assert level_percent(0.0) == 0 and level_percent(1.0) == 100 and level_percent(1e-4) == 0
    assert level_percent(0.5) == 90


def focus_on(qtbot, win, widget) -> None:
    from PySide6.QtWidgets import QApplication

    win.activateWindow()
    widget.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is widget, timeout=5000)


def test_keyboard_shortcuts_in_the_visible_tab(qtbot, make_window, fakes):
    from PySide6.QtCore import Qt

    win, p = make_window()
    win.activateWindow()
    p.play_button.setFocus()
    qtbot.keyClick(p.play_button, Qt.Key.Key_Space)  # Space: play
    assert p.player is not None and p.player.playing and p.play_button.text() == "Stop"
    qtbot.keyClick(p.play_button, Qt.Key.Key_Space)  # ...and stop
    assert not p.player.playing
    qtbot.keyClick(p.play_button, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # Ctrl+R: record
    assert p.recorder is not None
    qtbot.waitUntil(lambda: p.recorder.duration_s > 0.2, timeout=5000)
    focus_on(qtbot, win, p.play_button)  # the offscreen platform may drop the window's activation meanwhile
    qtbot.keyClick(p.play_button, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert p.recorder is None
    focus_on(qtbot, win, p.play_button)
    qtbot.keyClick(p.play_button, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # Ctrl+Return: separate
    assert p.running
    qtbot.waitUntil(lambda: not p.running, timeout=30000)
    assert len(p.rows.rows) == 3


def test_closing_the_window_stops_recording_playing_and_jobs(qtbot, make_window, fakes):
    win, p = make_window()
    p.live.setChecked(True)
    qtbot.waitUntil(lambda: p.live_model() is not None, timeout=10000)
    assert p.start_recording()
    qtbot.waitUntil(lambda: p.live_samples() > 1000, timeout=10000)
    recorder = p.recorder
    win.close()
    assert p.recorder is None and not recorder.recording and win.threads_stopped


def test_the_pictures_helpers():
    from playground.widgets.audio_rows import envelope, spectrogram

    x, y = envelope(KNOWN[:100], 8000)
    assert np.array_equal(y, KNOWN[:100]) and x[1] == 1 / 8000
    x, y = envelope(KNOWN, 8000, max_points=1000)
    assert y.size <= 1000 and y.max() <= 0.5 and y.min() >= -0.5 and x[-1] < KNOWN.size / 8000
    pic = spectrogram(KNOWN[:8000], 8000)
    assert pic.shape[0] == 129 and 0 <= pic.min() and pic.max() == 1.0
    assert pic[:, 5].argmax() == round(440 / 8000 * 256)  # the tone's bin is the brightest
    assert not spectrogram(np.zeros(8000, np.float32), 8000).any()  # silence is dark


def test_true_voices_from_files_give_a_file_its_scores(qtbot, panel, tmp_path):
    p = panel
    mixture, sources, rate = demos.load_demo(demos.list_demos()[1])
    audio.write_audio(tmp_path / "mix.wav", mixture, rate)
    job = p.open_audio(str(tmp_path / "mix.wav"))
    qtbot.waitUntil(lambda: job.is_done and p.input.name == "mix.wav", timeout=10000)
    assert p.input.sources is None
    assert p.open_true_voices([str(tmp_path / "mix.wav")]) is None  # one file for a two-voice model
    assert "choose 2 files" in p.controls.status.text()
    paths = []
    for c, voice in enumerate(sources):
        paths.append(str(tmp_path / f"voice{c}.flac"))
        audio.write_audio(paths[-1], voice, rate)
    job = p.open_true_voices(paths)
    qtbot.waitUntil(lambda: job.is_done, timeout=10000)
    assert p.input.sources.shape == (2, mixture.size)
    np.testing.assert_allclose(p.input.sources, sources, atol=2e-4)  # 16-bit files
    separate(qtbot, p)
    assert all(math.isfinite(v) for v in p.result.si_snri)
    assert all(re.fullmatch(r"SI-SNRi [+-]\d+\.\d dB", r.score_label.text()) for r in p.rows.rows[1:])


def test_every_recording_is_kept_on_disk(qtbot, make_window, fakes):
    _, p = make_window()
    assert p.start_recording()
    qtbot.waitUntil(lambda: p.recorder is not None and p.recorder.duration_s > 0.3, timeout=10000)
    p.stop_recording()
    qtbot.waitUntil(lambda: p.kept_recording is not None, timeout=10000)
    data, rate = sf.read(p.kept_recording, dtype="float32")
    assert rate == p.input.rate == 16000 and np.array_equal(data, p.input.mixture)  # recorded at 16 kHz
    assert p.kept_recording.parent == panel_module.recordings_dir()
    assert str(p.kept_recording) in p.controls.status.text()


def test_the_last_folder_is_remembered_for_opening_and_saving(qtbot, make_window, tmp_path, monkeypatch):
    win, p = make_window()
    folder = tmp_path / "audio"
    folder.mkdir()
    x = (0.3 * np.sin(np.arange(8000) / 5.0)).astype(np.float32)
    sf.write(folder / "talk.wav", x, 8000)
    asked = []

    def fake_open(parent, caption, directory, filters):
        asked.append(directory)
        return str(folder / "talk.wav"), filters

    monkeypatch.setattr(panel_module.QFileDialog, "getOpenFileName", fake_open)
    job = p.open_audio()
    qtbot.waitUntil(lambda: job.is_done and p.input.name == "talk.wav", timeout=10000)
    assert asked == [""] and p.settings_state().folder == str(folder.resolve())
    p.open_audio()
    assert asked[-1] == str(folder.resolve())
    suggested = []
    monkeypatch.setattr(panel_module.QFileDialog, "getSaveFileName",
                        lambda parent, caption, path, filters: (suggested.append(path), ("", ""))[1])
    p.save_row(0)
    assert suggested == [str(folder.resolve() / "mixture.wav")]
    win.close()
    _, again = make_window()
    assert again.settings_state().folder == str(folder.resolve())


def test_separate_waits_for_audio_that_is_still_opening(qtbot, panel, tmp_path):
    p = panel
    path = tmp_path / "later.wav"
    sf.write(path, (0.2 * np.sin(np.arange(16000) / 3.0)).astype(np.float32), 8000)
    job = p.open_audio(str(path))
    p.start()
    if not job.is_done:  # (a fast machine may have opened it already)
        assert not p.running and "Wait for the audio" in p.controls.form_error.text()
    qtbot.waitUntil(lambda: job.is_done and p.input.name == "later.wav", timeout=10000)
    separate(qtbot, p)
    assert p.result.sources.shape[1] == 16000 and p.result.si_snri is None


def test_microphones_of_the_same_name_are_told_apart_and_looked_for_again(qtbot, make_window, fakes, monkeypatch):
    mics = [audio.DeviceInfo(0, "Mic", 1, 48000.0, True, "MME"),
            audio.DeviceInfo(5, "Mic", 1, 48000.0, False, "WASAPI")]
    monkeypatch.setattr(audio, "input_devices", lambda: list(mics))
    rescans = []
    monkeypatch.setattr(audio, "rescan_devices", lambda: rescans.append(1))
    _, p = make_window()
    labels = [p.device.itemText(i) for i in range(p.device.count())]
    assert labels == ["Default microphone", "Mic (MME) (default)", "Mic (WASAPI)"]
    p.device.setCurrentIndex(p.device.findData("Mic (WASAPI)"))
    p.device.activated.emit(p.device.currentIndex())   # as a user's choice
    assert p.start_recording()
    assert fakes.inputs[-1].device == 5            # PortAudio's index, not the ambiguous name
    p.stop_recording()
    mics.append(audio.DeviceInfo(9, "USB headset", 1, 16000.0))
    p.refresh_button.click()
    assert rescans == [1] and p.device.findData("USB headset") > 0
    assert p.device.currentData() == "Mic (WASAPI)"   # the choice stays


def test_the_live_latency_names_its_parts_and_a_backlog():
    chunk = panel_module.LiveChunk(np.zeros((2, 0), np.float32), 0.004, 0.002, samples_in=8000)
    text = panel_module.live_latency_text(chunk, 0.05, sent=8000, rate=8000)
    assert text.startswith("Live: latency up to 56 ms = 2.0 ms (the model) + 50 ms") and "behind" not in text
    late = panel_module.live_latency_text(chunk, 0.05, sent=8000 + 12000, rate=8000)
    assert "1.5 s behind" in late
