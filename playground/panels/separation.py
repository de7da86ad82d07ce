"""The Separation tab: Conv-TasNet splits a mixture of voices into one track per voice.

The method is :mod:`playground.ml.separation` (the model, windowed separation, live
streaming, audio in and out); this module only holds the tracks, draws them and runs the
ML core's functions as jobs. Nothing here runs the network on the GUI thread.

* Input: a shipped demo (the first is loaded and separated when the tab opens), an audio
  file, or a recording (a level meter and a growing waveform while it records, a length
  limit; each recording is also kept as a WAV under the app's data folder, the newest
  :data:`~playground.ml.separation.audio.KEEP_RECORDINGS`, so that none is lost).
* Separate: :func:`~playground.ml.separation.separate.separate` as the panel's job; with a
  demo's true sources the job also scores every voice (SI-SNRi) and looks inside the model
  (the encoder output w and each voice's mask m_c on the first seconds).
* Live mode (a causal model): while recording, each new block goes to the running job
  (the kit's job input), which feeds a :class:`StreamingSeparator` and sends the separated
  samples back as they become final; the voice rows grow as you speak.
* Rows: the mixture and each voice, a waveform and a spectrogram, play / solo / mute /
  save, one playhead (click a waveform to move it). One :class:`Player` plays the rows
  with the solo / mute gains.

Sound devices are optional: without them the record controls are disabled with the
reason shown, and Play says why in the status line. The tests replace the streams with
:data:`INPUT_STREAM_FACTORY` / :data:`OUTPUT_STREAM_FACTORY` (None: PortAudio's).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QSpinBox, QVBoxLayout,
                               QWidget)

from ..errors import friendly_message
from ..jobs import JobState
from ..learn.separation import separation_sheet
from ..ml.separation import audio, demos, loaders
from ..ml.separation.analysis import INSIDE_SECONDS, Inside, frame_count, inside_view, score
from ..ml.separation import separate as separation
from ..ml.separation import streaming
from ..paths import RESOURCES, data_dir
from ..progress import Progress
from ..widgets.audio_rows import AudioRows, ModelStrip, spectrogram
from ..widgets.forms import ERROR_COLOR, JobControls, button, compact_form
from ..widgets.model_picker import ModelPicker
from ..widgets.separation_diagram import DiagramState, SeparationDiagram
from .base import JobRunner, Panel

log = logging.getLogger(__name__)

#: Stream factories for the Recorder and the Player (None: sounddevice's); tests put fakes here.
INPUT_STREAM_FACTORY = None
OUTPUT_STREAM_FACTORY = None

FILE_FILTER = "Conv-TasNet (*.safetensors *.json *.pth *.pt *.bin);;All files (*)"
AUDIO_FILTER = "Audio (*.wav *.flac *.ogg *.aiff *.aif *.mp3);;All files (*)"
SAVE_FILTERS = {"WAV (*.wav)": ".wav", "FLAC (*.flac)": ".flac", "OGG Vorbis (*.ogg)": ".ogg"}
PLAYHEAD_MS = 40
RECORD_MIN_RATE = 16000  # recordings (not live mode's, which go at the causal model's rate)
RECORD_TICK_MS = 50
DRAW_EVERY_TICKS = 4  # the growing waveforms are redrawn every 4 ticks (0.2 s)
ARROW = "x → encoder → w ⊙ m_c → decoder → ŝ_c"


@dataclass
class SeparationSettings:
    """What the Separation tab remembers (the kit saves it as JSON)."""

    demo: str = ""  # the demo's name ("" = the first)
    device: str = ""  # the input device's name, as audio.device_keys gives it ("" = the system's default)
    max_seconds: int = 30
    live: bool = False
    window_s: float = separation.DEFAULT_WINDOW_S
    folder: str = ""  # where the last audio file was opened or saved

    def validate(self) -> dict[str, str]:
        bad = {}
        if not 1 <= self.max_seconds <= 600:
            bad["max_seconds"] = "from 1 to 600"
        if not 1.0 <= self.window_s <= 60.0:
            bad["window_s"] = "from 1 to 60"
        return bad


# -- what the jobs give back ------------------------------------------------------------------------
@dataclass(frozen=True)
class InputAudio:
    """The mixture the tab separates: mono float32 [T], its rate, and the true sources when known."""

    name: str
    mixture: np.ndarray
    rate: int
    sources: np.ndarray | None = None  # [C, T] (the demos)
    spectrogram: np.ndarray | None = None


@dataclass(frozen=True)
class SeparationResult:
    sources: np.ndarray  # [C, T] at the input's rate
    rate: int
    spectrograms: tuple[np.ndarray, ...] = ()
    si_snr: tuple[float, ...] | None = None
    si_snr_mix: tuple[float, ...] | None = None
    si_snri: tuple[float, ...] | None = None
    inside: Inside | None = None
    seconds: float = 0.0
    elapsed_s: float = 0.0
    mixture: np.ndarray | None = None  # live mode: what was pushed


@dataclass(frozen=True)
class LiveInside:
    """Live mode's look inside the model, on the last seconds pushed (the mixture stretch with it)."""

    inside: Inside
    mixture: np.ndarray


LIVE_INSIDE_EVERY_S = 1.0  # live mode looks inside the model once a second of audio


@dataclass(frozen=True)
class LiveChunk:
    """Separated samples that became final, [C, m], and the timings of the push that gave them."""

    sources: np.ndarray
    compute_s: float
    latency_s: float
    samples_in: int


# -- jobs (worker threads) ----------------------------------------------------------------------------
def load_demo_job(demo: demos.Demo) -> InputAudio:
    mixture, sources, rate = demos.load_demo(demo)
    return InputAudio(demo.title, mixture, rate, sources, spectrogram(mixture, rate))


def read_file_job(path: str):
    """Read a file block by block (a long one shows its progress and can be stopped), then its spectrogram."""
    samples, rate = yield from audio.reading_audio(path)
    yield Progress(1.0, f"Drawing the spectrogram of {Path(path).name}")
    return InputAudio(Path(path).name, samples, rate, None, spectrogram(samples, rate))


def true_voices_job(current: InputAudio, paths: list[str]):
    """The current mixture with the true voices read from ``paths`` (resampled, cut or padded to it)."""
    voices = []
    for path in paths:
        samples, rate = yield from audio.reading_audio(path)
        samples = audio.resample(samples, rate, current.rate)
        voices.append(np.pad(samples, (0, max(0, len(current.mixture) - len(samples))))[:len(current.mixture)])
    return InputAudio(current.name, current.mixture, current.rate, np.stack(voices).astype(np.float32),
                      current.spectrogram)


def spectrograms_job(tracks: list[np.ndarray], rate: int) -> list[np.ndarray]:
    return [spectrogram(t, rate) for t in tracks]


def separate_job(model, mixture: np.ndarray, rate: int, true_sources: np.ndarray | None, window_s: float,
                 device: str):
    """The job behind Separate: the sources, their scores (with true sources), their spectrograms and
    the pictures of what the model does inside."""
    start = time.perf_counter()
    sources = yield from separation.separate(model, mixture, rate, window_s=window_s, device=device)
    elapsed = time.perf_counter() - start
    snr = snr_mix = snri = None
    if true_sources is not None and true_sources.shape == sources.shape:
        yield Progress(0.96, "Scoring each voice against the true one")
        sources, snr, snr_mix, snri = score(sources, true_sources, mixture)
    yield Progress(0.97, "Looking inside the model")
    inside = inside_view(model, mixture, rate)
    yield Progress(0.99, "Drawing the spectrograms")
    pictures = tuple(spectrogram(s, rate) for s in sources)
    return SeparationResult(sources, rate, pictures, snr, snr_mix, snri, inside, len(mixture) / rate, elapsed)


def live_job(model, device: str):
    """The job behind live mode: blocks of samples (numpy arrays) arrive as job input, "end" finishes.

    Each block goes through the :class:`StreamingSeparator`; what became final is yielded as a
    :class:`LiveChunk`. At "end" the rest is flushed and the whole recording comes back as a
    :class:`SeparationResult` (None if nothing was recorded).
    """
    model.to(device)
    model.eval()
    streamer = streaming.StreamingSeparator(model)
    rate = streamer.sample_rate
    pushed: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    queue: collections.deque = collections.deque()
    idle = Progress(None, f"Live: separating as you speak (latency {streamer.latency_s * 1000:.1f} ms + compute)")
    compute = 0.0
    looked_at = 0  # samples pushed when live mode last looked inside the model
    inputs = yield idle
    while True:
        queue.extend(inputs or ())
        if not queue:
            time.sleep(0.02)
            inputs = yield idle
            continue
        item = queue.popleft()
        if isinstance(item, str) and item == "end":
            out = streamer.flush()
            parts.append(out)
            inputs = yield LiveChunk(out, streamer.last_compute_s, streamer.latency_s, sum(map(len, pushed)))
            mixture = np.concatenate(pushed) if pushed else np.zeros(0, np.float32)
            if mixture.size == 0:
                return None
            sources = np.concatenate(parts, axis=1).astype(np.float32)[:, :mixture.size]
            yield Progress(0.98, "Looking inside the model")
            inside = inside_view(model, mixture, rate)
            pictures = tuple(spectrogram(s, rate) for s in sources)
            return SeparationResult(sources, rate, pictures, inside=inside, seconds=mixture.size / rate,
                                    elapsed_s=compute, mixture=mixture)
        block = np.asarray(item, dtype=np.float32).reshape(-1)
        pushed.append(block)
        out = streamer.push(block)
        compute += streamer.last_compute_s
        parts.append(out)
        chunk = LiveChunk(out, streamer.last_compute_s, streamer.latency_s, streamer.samples_in)
        if streamer.samples_in - looked_at >= LIVE_INSIDE_EVERY_S * rate and not queue:
            looked_at = streamer.samples_in
            recent = audio.last_samples(pushed, int(INSIDE_SECONDS * rate))
            queue.extend((yield chunk) or ())
            inputs = yield LiveInside(inside_view(model, recent, rate), recent)
            continue
        inputs = yield chunk


def live_latency_text(chunk: LiveChunk, tick_s: float, sent: int, rate: int) -> str:
    """How late live mode's voices are: the model's own latency, the wait for the next tick that
    sends the new samples, and the compute; and how far behind the job is, if it is."""
    total = chunk.latency_s + tick_s + chunk.compute_s
    text = (f"Live: latency up to {total * 1000:.0f} ms = {chunk.latency_s * 1000:.1f} ms (the model) + "
            f"{tick_s * 1000:.0f} ms (the wait for the next tick) + {chunk.compute_s * 1000:.1f} ms (compute), "
            "plus the sound card's buffer")
    behind = (sent - chunk.samples_in) / max(rate, 1)
    if behind > 0.25:
        text += f"; {behind:.1f} s behind (this computer is slower than real time for this model)"
    return text


def recordings_dir() -> Path:
    """Where recordings are kept (the app's data folder)."""
    return data_dir() / "recordings"


def is_causal(model) -> bool:
    cfg = getattr(model, "config", None)
    return cfg is not None and bool(cfg.causal) and cfg.norm == "cLN"


def level_percent(peak: float) -> int:
    """A peak level on a 60 dB meter: 0 (silence, -60 dBFS) .. 100 (full scale)."""
    if peak <= 0:
        return 0
    return int(round(max(0.0, min(1.0, 1.0 + 20 * math.log10(peak) / 60.0)) * 100))


class SeparationPanel(Panel):
    title = "S&eparation"
    settings_key = "separation"
    Settings = SeparationSettings

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.model = None  # the picked separator (a ConvTasNet)
        self.causal = None  # the LoadedModel for live mode, when the picked one is not causal
        self.input: InputAudio | None = None
        self.result: SeparationResult | None = None
        self.player: audio.Player | None = None
        self.recorder: audio.Recorder | None = None
        self.demos = demos.list_demos()
        self._wanted_demo = ""
        self._wanted_device = ""
        self._device_index: dict[str, int] = {}  # the device picker's names -> PortAudio's indices
        self._load_job = None
        self._causal_job = None
        self._views_job = None
        self._generation = 0  # bumped whenever the rows change: late spectrograms are dropped
        self._live = False  # a live job is running
        self._live_parts: list[np.ndarray] = []
        self._live_rate = 0
        self._last_recording: np.ndarray | None = None
        self._before_recording: tuple[InputAudio | None, SeparationResult | None] = (None, None)
        self._sent = 0
        self._ticks = 0
        self.kept_recording: Path | None = None  # the last recording's file
        self.kept_recording_job = None
        self._started = False
        self._auto_separate = False  # separate the first demo once it and the model are there
        self._folder = ""
        self._record_reason: str | None = None
        self._build()

    # -- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.lay_out(self._build_form(), self._build_view())
        self.diagram = SeparationDiagram()
        if self.learn is not None:
            self.learn.set_figure(self.diagram)
        self.runner.disable_while_running(self.picker, self.window_s)
        self.runner.stateChanged.connect(lambda _s: self._update_record_controls())
        self.picker.modelChanged.connect(self._on_model)
        self._play_timer = QTimer(self, interval=PLAYHEAD_MS)
        self._play_timer.timeout.connect(self._play_tick)
        self._rec_timer = QTimer(self, interval=RECORD_TICK_MS)
        self._rec_timer.timeout.connect(self._record_tick)
        for keys, slot in (("Space", self.toggle_play), ("Ctrl+R", self.toggle_record)):
            QShortcut(QKeySequence(keys), self, slot).setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)

    def _build_form(self) -> QWidget:
        box = QWidget()
        form = QFormLayout(box)
        d = SeparationSettings()
        self.picker = ModelPicker(self.ctx.pool, self.ctx.settings, "separation/model",
                                  load_default=lambda: loaders.load_default(),
                                  load_path=lambda path: loaders.load_for_picker(path),
                                  default_name="TTS voices model (embedded)", file_filter=FILE_FILTER,
                                  device=lambda: self.ctx.device,
                                  builtin={"Causal TTS voices model (embedded, live mode's)":
                                           str(RESOURCES / loaders.DEFAULT_CAUSAL_MODEL)})
        form.addRow(self.picker)

        source = QGroupBox("Input")
        sf = QFormLayout(source)
        self.demo = QComboBox()
        for demo in self.demos:
            self.demo.addItem(demo.title, demo.name)
        if not self.demos:
            self.demo.addItem("(no demos found)", "")
            self.demo.setEnabled(False)
        self.demo.activated.connect(lambda _i: self.load_demo())
        sf.addRow("Demo", self.demo)
        self.open_button = button("Open audio…", lambda: self.open_audio(),
                                  "A WAV, FLAC or OGG file (several channels are mixed down)")
        sf.addRow(self.open_button)
        self.truth_button = button("True voices…", lambda: self.open_true_voices(),
                                   "The voices of this mixture, one file each, if you have them: "
                                   "then each separated voice gets its SI-SNRi")
        sf.addRow(self.truth_button)
        self.device = QComboBox()
        self.device.setToolTip("The microphone to record from")
        self.device.activated.connect(lambda _i: setattr(self, "_wanted_device", self.device.currentData() or ""))
        self.device.addItem("Default microphone", "")
        self.refresh_button = button("↻", lambda: self.refresh_devices(rescan=True), "Look for microphones again "
                                     "(one plugged in since)")
        self.refresh_button.setMaximumWidth(36)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device, 1)
        device_row.addWidget(self.refresh_button)
        self.max_seconds = QSpinBox(minimum=1, maximum=600, value=d.max_seconds, suffix=" s")
        self.max_seconds.setToolTip("Recording stops by itself after this long")
        self.record_button = button("Record", lambda: self.toggle_record(), "Record from the microphone (Ctrl+R)")
        self.level = QProgressBar()
        self.level.setRange(0, 100)
        self.level.setValue(0)
        self.level.setTextVisible(False)
        self.level.setMaximumHeight(10)
        self.level.setToolTip("Input level (peak, 60 dB scale)")
        self.record_reason = QLabel("")
        self.record_reason.setWordWrap(True)
        self.record_reason.setStyleSheet(f"color: {ERROR_COLOR}")
        self.record_reason.setVisible(False)
        sf.addRow("Microphone", device_row)
        sf.addRow("Length limit", self.max_seconds)
        sf.addRow(self.record_button)
        sf.addRow("Level", self.level)
        sf.addRow(self.record_reason)
        form.addRow(source)

        sep = QGroupBox("Separation")
        pf = QFormLayout(sep)
        self.window_s = QDoubleSpinBox(minimum=1.0, maximum=60.0, value=d.window_s, singleStep=1.0, decimals=1,
                                       suffix=" s")
        self.window_s.setToolTip("Long inputs are separated in overlapping windows of this length")
        pf.addRow("Window", self.window_s)
        self.live = QCheckBox("Live mode (separate while recording)")
        self.live.setToolTip("Needs a causal model: the embedded causal one is loaded unless the picked "
                             "model is causal")
        self.live.toggled.connect(self._on_live_toggled)
        pf.addRow(self.live)
        self.live_info = QLabel("")
        self.live_info.setWordWrap(True)
        pf.addRow(self.live_info)
        form.addRow(sep)

        self.controls = JobControls(self, form, start_text="Separate", start_tip="Separate the voices of the mixture",
                                    stop_tip="Stop separating (or opening a file)", start=self.start,
                                    stop=self.stop)
        self.runner = JobRunner(self.ctx, self.controls, failure_prefix="Separation failed", parent=self)
        return compact_form(box, min_width=320)

    def _build_view(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        transport = QHBoxLayout()
        self.play_button = QPushButton("Play")
        self.play_button.setToolTip("Play or stop the rows with their solo / mute (Space)")
        self.play_button.clicked.connect(self.toggle_play)
        self.time_label = QLabel("0.00 / 0.00 s")
        self.input_label = QLabel("No audio yet.")
        self.input_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        transport.addWidget(self.play_button)
        transport.addWidget(self.time_label)
        transport.addWidget(self.input_label, 1)
        layout.addLayout(transport)
        self.rows = AudioRows()
        self.rows.playRow.connect(self.play_row)
        self.rows.saveRow.connect(lambda k: self.save_row(k))
        self.rows.soloMuteChanged.connect(self._apply_gains)
        self.rows.seekRequested.connect(self.seek)
        scroll = QScrollArea()
        scroll.setWidget(self.rows)
        scroll.setWidgetResizable(True)
        layout.addWidget(scroll, 1)
        self.strip = ModelStrip(f"Inside the model (first {INSIDE_SECONDS:.0f} s):  {ARROW}")
        self.strip.setVisible(False)
        layout.addWidget(self.strip)
        return box

    # -- first show --------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.ensure_started()

    def ensure_started(self) -> None:
        """The first time the tab is shown: the model, the devices and the first demo (a window
        whose Separation tab is never opened spends nothing on them)."""
        if self._started:
            return
        self._started = True
        self.refresh_devices()
        self.ensure_model()
        if self.demos:
            self._auto_separate = True
            self.load_demo()
        if self.live.isChecked():
            self._on_live_toggled(True)

    def refresh_devices(self, rescan: bool = False) -> None:
        """List the microphones (``rescan``: ask PortAudio to look again); disable recording, with
        the reason, when there are none."""
        if rescan:
            if self.recorder is not None or self.running:
                return
            self._stop_player()
            audio.rescan_devices()
        self._record_reason = audio.audio_unavailable_reason("input")
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItem("Default microphone", "")
        self._device_index = {}
        if self._record_reason is None:
            infos = audio.input_devices()
            for info, key in zip(infos, audio.device_keys(infos)):
                self.device.addItem(key + (" (default)" if info.is_default else ""), key)
                self._device_index[key] = info.index
        self.device.setCurrentIndex(max(0, self.device.findData(self._wanted_device)))
        self.device.blockSignals(False)
        self.record_reason.setText(self._record_reason or "")
        self.record_reason.setVisible(self._record_reason is not None)
        self._update_record_controls()

    def _update_record_controls(self) -> None:
        """The input controls: no new input while recording or while a job runs."""
        available = self._record_reason is None
        recording = self.recorder is not None
        idle = not recording and not self.running
        self.record_button.setEnabled(available and (recording or not self.running))
        self.record_button.setText("Stop recording" if recording else "Record")
        self.device.setEnabled(available and idle)
        self.refresh_button.setEnabled(idle)
        self.max_seconds.setEnabled(not recording)
        self.demo.setEnabled(bool(self.demos) and idle)
        self.open_button.setEnabled(idle)
        self.truth_button.setEnabled(idle)
        self.live.setEnabled(idle)

    # -- settings ----------------------------------------------------------------------------------
    def settings_state(self) -> SeparationSettings:
        return SeparationSettings(demo=self.demo.currentData() or "", device=self._wanted_device,
                                  max_seconds=self.max_seconds.value(), live=self.live.isChecked(),
                                  window_s=self.window_s.value(), folder=self._folder)

    def apply_settings(self, s: SeparationSettings) -> None:
        self._wanted_demo = s.demo
        self.demo.setCurrentIndex(max(0, self.demo.findData(s.demo)))
        self._wanted_device = s.device
        index = self.device.findData(s.device)
        if index >= 0:
            self.device.setCurrentIndex(index)
        self.max_seconds.setValue(s.max_seconds)
        self.window_s.setValue(s.window_s)
        self._folder = s.folder
        self.live.blockSignals(True)
        self.live.setChecked(s.live)
        self.live.blockSignals(False)
        if s.live and self._started:
            self._on_live_toggled(True)

    def learn_sheet(self):
        return separation_sheet(self.model.n_src if self.model is not None else 2)

    # -- the model ---------------------------------------------------------------------------------
    def _on_model(self, loaded) -> None:
        self.model = loaded.model
        self.refresh_learn_sheet()
        cfg = self.model.config
        self.update_learn({"N": cfg.N, "L": cfg.L, "stride": cfg.stride, "C": cfg.n_src})
        if self.live.isChecked():
            self._on_live_toggled(True)
        self._maybe_auto_separate()

    def _maybe_auto_separate(self) -> None:
        """The first demo is separated as soon as it and the model are loaded (once)."""
        if not self._auto_separate or self.model is None or self.input is None or self.input.sources is None:
            return
        if self.running or self.recorder is not None or self.result is not None:
            return
        self._auto_separate = False
        self.start()

    def live_model(self):
        """The causal model live mode uses: the picked one if it is causal, else the embedded causal one."""
        if self.model is not None and is_causal(self.model):
            return self.model
        return None if self.causal is None else self.causal.model

    def _on_live_toggled(self, on: bool) -> None:
        if not on:
            self.live_info.setText("")
            return
        if self.live_model() is not None:
            self._show_live_model()
            return
        if self._causal_job is not None and not self._causal_job.is_done:
            return
        self.live_info.setText("Loading the causal model for live mode…")
        try:
            job = self.ctx.pool.submit(loaders.load_default_causal, name="Load the causal model", interactive=True)
        except RuntimeError:  # the window is closing
            return
        self._causal_job = job

        def done(loaded) -> None:
            self.causal = loaded
            if self.live.isChecked():
                self._show_live_model()

        def failed(message: str) -> None:
            self.live_info.setText("")
            self.live.setChecked(False)
            self.controls.set_status(f"Live mode needs a causal model: {message}", error=True)

        job.finished.connect(done)
        job.failed.connect(failed)

    def _show_live_model(self) -> None:
        model = self.live_model()
        if model is None:
            return
        latency = model.config.L / model.sample_rate
        self.live_info.setText(f"Live with a causal model ({model.sample_rate} Hz, {model.n_src} voices): "
                               f"algorithmic latency {latency * 1000:.1f} ms. Press Record.")

    # -- input -------------------------------------------------------------------------------------
    def load_demo(self, index: int | None = None):
        """Load the demo chosen in the combo (or ``index``) in a job."""
        if not self.demos or self.running or self.recorder is not None:
            return None
        if index is not None:
            self.demo.setCurrentIndex(index)
        demo = next((d for d in self.demos if d.name == self.demo.currentData()), self.demos[0])
        return self._load(load_demo_job, demo, what=demo.title)

    def open_audio(self, path: str | None = None):
        if self.running or self.recorder is not None:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open audio", self._folder, AUDIO_FILTER)
        if not path:
            return None
        self._remember_folder(path)
        return self._load(read_file_job, path, what=Path(path).name)

    def _remember_folder(self, path: str) -> None:
        self._folder = str(Path(path).resolve().parent)
        self.save_settings()

    def open_true_voices(self, paths: list[str] | None = None):
        """Give the true voices of the current mixture (one file each), for SI-SNRi."""
        if self.running or self.recorder is not None or self.input is None:
            return None
        if paths is None:
            paths, _ = QFileDialog.getOpenFileNames(self, "The true voices (one file each)", self._folder,
                                                    AUDIO_FILTER)
        if not paths:
            return None
        self._remember_folder(paths[0])
        n_src = getattr(self.model, "n_src", None)
        if n_src is not None and len(paths) != n_src:
            self.controls.set_status(f"This model separates {n_src} voices: choose {n_src} files, not {len(paths)}.",
                                     error=True)
            return None
        current = self.input
        return self._load(lambda ps: true_voices_job(current, ps), list(paths), what=f"{len(paths)} true voices")

    def _load(self, fn, arg, what: str):
        if fn is not load_demo_job:
            self._auto_separate = False
        if self._load_job is not None and not self._load_job.is_done:
            self._load_job.cancel()
        try:
            job = self.ctx.pool.submit(fn, arg, name=f"Open {what}", interactive=True)
        except RuntimeError:
            return None
        self._load_job = job
        self.controls.set_status(f"Opening {what}…")

        def stopped() -> None:
            if not self.running:
                self.runner.set_progress(0.0)
            kept = f" {self.input.name} is still open." if self.input is not None else ""
            self.controls.set_status(f"Stopped opening {what}.{kept}")

        def done(value: InputAudio) -> None:
            if job is self._load_job and job.is_cancel_requested:   # Stop came as it ended
                stopped()
            elif job is self._load_job:
                self.set_input(value)
                self.controls.set_status(f"Opened {value.name}: {len(value.mixture) / value.rate:.1f} s at "
                                         f"{value.rate} Hz. Separate splits it into voices.")
                self._maybe_auto_separate()

        def progress(fraction: float, text: str) -> None:
            if job is self._load_job and not self.running and not job.is_cancel_requested:
                self.runner.set_progress(fraction)
                if text:
                    self.controls.set_status(text)

        def ended(state: JobState) -> None:
            if job is not self._load_job:
                return
            self.runner.update_buttons()
            if state == JobState.CANCELLED:
                stopped()
            elif state == JobState.FAILED and not self.running:
                self.runner.set_progress(0.0)

        job.finished.connect(done)
        job.progress.connect(progress)
        job.ended.connect(ended)
        job.failed.connect(lambda message: job is self._load_job and self.controls.set_status(
            f"Could not open {what}: {message}", error=True))
        if not self.running:
            self.runner.set_progress(0.0)
            self.controls.stop_button.setEnabled(True)                            # Stop stops the opening too
        return job

    def set_input(self, value: InputAudio, result: SeparationResult | None = None) -> None:
        """A new mixture (and its voices, if separated already): the rows start again."""
        self._stop_player()
        self.input = value
        self.result = result
        self.input_label.setText(f"{value.name} · {len(value.mixture) / value.rate:.2f} s · {value.rate} Hz")
        self._show_rows()
        self.strip.set_pictures([])
        if result is not None and result.inside is not None:
            self._show_inside(result.inside)

    # -- rows --------------------------------------------------------------------------------------
    def row_tracks(self) -> list[np.ndarray]:
        """The mixture, then each voice, as float32 [T] arrays (what the rows show and play)."""
        if self.input is None:
            return []
        tracks = [self.input.mixture]
        if self.result is not None:
            tracks += list(self.result.sources)
        return tracks

    def _show_rows(self) -> None:
        self._generation += 1
        tracks = self.row_tracks()
        names = ["Mixture"] + [f"Voice {c + 1}" for c in range(len(tracks) - 1)]
        self.rows.set_names(names)
        rate = self.input.rate
        duration = len(self.input.mixture) / rate
        missing = []
        for k, (row, track) in enumerate(zip(self.rows.rows, tracks)):
            row.set_audio(track, rate)
            picture = self.input.spectrogram if k == 0 else (
                self.result.spectrograms[k - 1] if self.result is not None and
                len(self.result.spectrograms) >= k else None)
            row.set_spectrogram(picture, duration, rate)
            if picture is None and track.size:
                missing.append(k)
            row.set_score(self._score_text(k))
        # with voices the mixture is muted, so that playing gives the voices (their sum is the mixture)
        self.rows.rows[0].mute_button.blockSignals(True)
        self.rows.rows[0].mute_button.setChecked(len(tracks) > 1)
        self.rows.rows[0].mute_button.blockSignals(False)
        for row in self.rows.rows[1:]:
            for b in (row.solo_button, row.mute_button):
                b.blockSignals(True)
                b.setChecked(False)
                b.blockSignals(False)
        self.rows.set_playhead(0.0)
        self._update_time(0.0)
        if missing:
            self._request_spectrograms(missing)

    def _score_text(self, k: int) -> str:
        if k == 0 or self.result is None or self.result.si_snri is None or k > len(self.result.si_snri):
            return ""
        return f"SI-SNRi {self.result.si_snri[k - 1]:+.1f} dB"

    def _request_spectrograms(self, rows: list[int]) -> None:
        tracks = self.row_tracks()
        generation = self._generation
        try:
            job = self.ctx.pool.submit(spectrograms_job, [tracks[k] for k in rows], self.input.rate,
                                       name="Spectrograms", interactive=True)
        except RuntimeError:
            return
        self._views_job = job

        def done(pictures) -> None:
            if generation != self._generation or self.input is None:
                return
            duration = len(self.input.mixture) / self.input.rate
            for k, picture in zip(rows, pictures):
                self.rows.rows[k].set_spectrogram(picture, duration, self.input.rate)

        job.finished.connect(done)

    def _show_inside(self, inside: Inside, mixture: np.ndarray | None = None, voices: tuple = (),
                     live: bool = False) -> None:
        """The strip under the rows and the Learn panel's diagram: w and each mask on a stretch of
        audio (the first seconds of the input, or live mode's last seconds)."""
        pictures = [("encoder output w", inside.w)]
        pictures += [(f"mask m{c + 1}", m) for c, m in enumerate(inside.masks)]
        self.strip.set_pictures(pictures)
        model = self.live_model() if live else self.model
        if model is None:
            return
        if mixture is None and self.input is not None:
            n = int(INSIDE_SECONDS * self.input.rate)
            mixture = self.input.mixture[:n]
            if self.result is not None:
                voices = tuple(v[:n] for v in self.result.sources)
        if mixture is None:
            return
        cfg = model.config
        rate = self.input.rate if self.input is not None and not live else model.sample_rate
        frames = frame_count(model, int(round(mixture.size * model.sample_rate / rate)))  # of the stretch shown
        self.diagram.set_state(DiagramState(cfg.N, cfg.L, frames, mixture.size / rate, mixture, inside.w,
                                            inside.masks, inside.mask_means, voices, live))

    # -- separating --------------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            return
        if self.recorder is not None:
            self.controls.form_error.setText("Stop recording first.")
            return
        if self.model is None:
            self.controls.form_error.setText("No model is loaded yet: wait for it, or open a Conv-TasNet file.")
            return
        if self.input is None:
            self.controls.form_error.setText("Choose a demo, open an audio file or record first.")
            return
        if self._load_job is not None and not self._load_job.is_done:
            self.controls.form_error.setText("Wait for the audio to open.")
            return
        self.controls.form_error.setText("")
        self.save_settings()
        self.refresh_learn_sheet()
        self._stop_player()
        true = self.input.sources
        if true is not None and true.shape[0] != self.model.n_src:
            true = None  # a 3-voice model on a 2-voice demo: nothing to score against
        self.runner.start(separate_job, self.model, self.input.mixture, self.input.rate, true, self.window_s.value(),
                          self.runner.device, name="Separate voices", interactive=True, on_ended=self._on_separated)

    def stop(self) -> None:
        if self._load_job is not None and not self._load_job.is_done and not self.running:
            self._load_job.cancel()
            self.controls.set_status("Stopping…")
            return
        self.runner.stop()

    def _on_separated(self, state: JobState) -> None:
        self._update_record_controls()
        result = self.job.value if state == JobState.FINISHED else None
        if result is None or self.input is None:
            return
        self.result = result
        self.runner.set_progress(1.0)
        self._stop_player()
        self._show_rows()
        if result.inside is not None:
            self._show_inside(result.inside)
        rtf = result.elapsed_s / max(result.seconds, 1e-9)
        text = f"Separated {result.seconds:.1f} s into {result.sources.shape[0]} voices in {result.elapsed_s:.2f} s " \
               f"(real-time factor {rtf:.3f})."
        if result.si_snri is not None:
            text += " SI-SNRi " + ", ".join(f"{v:+.1f}" for v in result.si_snri) + " dB."
        self.controls.set_status(text)
        self.update_learn(self._learn_values(result, rtf))

    def _learn_values(self, result: SeparationResult, rtf: float) -> dict:
        model = self.model if result.mixture is None else self.live_model()
        values = {"seconds": result.seconds, "rtf": rtf}
        if model is not None:
            cfg = model.config
            values.update(N=cfg.N, L=cfg.L, stride=cfg.stride, C=cfg.n_src)
        if result.inside is not None:
            values["K"] = result.inside.frames
            values.update({f"mask_mean{c + 1}": v for c, v in enumerate(result.inside.mask_means)})
        for key, scores in (("si_snr", result.si_snr), ("si_snr_mix", result.si_snr_mix), ("si_snri", result.si_snri)):
            if scores is not None:
                values.update({f"{key}{c + 1}": v for c, v in enumerate(scores)})
        return values

    # -- recording ---------------------------------------------------------------------------------
    def toggle_record(self) -> None:
        if self.recorder is not None:
            self.stop_recording()
        else:
            self.start_recording()

    def start_recording(self) -> bool:
        if self.recorder is not None or self._record_reason is not None:
            if self._record_reason is not None:
                self.controls.set_status(self._record_reason, error=True)
            return False
        if self.running:
            self.controls.set_status("Wait for the separation to end (or stop it) before recording.", error=True)
            return False
        live_model = None
        if self.live.isChecked():
            live_model = self.live_model()
            if live_model is None:
                loading = self._causal_job is not None and not self._causal_job.is_done
                self.controls.set_status("The causal model for live mode is still loading…" if loading else
                                         "Live mode has no causal model: open one, or switch live mode off.",
                                         error=not loading)
                return False
        if live_model is not None:
            rate = live_model.sample_rate
        else:
            # at least 16 kHz, whatever the model's rate: the recording is kept, and a model of
            # another rate may be picked later (Separate resamples to the model's rate and back)
            rate = max(RECORD_MIN_RATE, self.model.sample_rate if self.model is not None else RECORD_MIN_RATE)
        self._auto_separate = False
        self._stop_player()
        key = self.device.currentData() or ""
        device = self._device_index.get(key) if key else None
        recorder = audio.Recorder(rate, device, max_seconds=self.max_seconds.value(),
                                  stream_factory=INPUT_STREAM_FACTORY)
        try:
            recorder.start()
        except Exception as exc:  # noqa: BLE001 - UserError from the device, or anything PortAudio says
            self.controls.set_status(friendly_message(exc), error=True)
            return False
        self.recorder = recorder
        if self._load_job is not None and not self._load_job.is_done:
            self._load_job.cancel()                    # the recording is the new input: drop the one opening
            self._load_job = None
            self.runner.update_buttons()
        self._sent = 0
        self._ticks = 0
        self._live_parts = []
        self._live_rate = rate
        self._before_recording = (self.input, self.result)  # given back if nothing is recorded
        self._last_recording = None
        self.set_input(InputAudio("Recording", np.zeros(0, np.float32), rate))
        if live_model is not None:
            self._live = True
            self.result = SeparationResult(np.zeros((live_model.n_src, 0), np.float32), rate)
            self._show_rows()
            self.runner.start(live_job, live_model, self.runner.device, name="Live separation", interactive=True,
                              on_results=self._on_live_results, on_ended=self._on_live_ended)
        self.controls.set_status("Recording… (Ctrl+R or Stop recording ends it)")
        self._rec_timer.start()
        self._update_record_controls()
        return True

    def _record_tick(self) -> None:
        r = self.recorder
        if r is None:
            self._rec_timer.stop()
            return
        self.level.setValue(level_percent(r.level().peak))
        self._ticks += 1
        draw = self._ticks % DRAW_EVERY_TICKS == 0
        if self._live:
            new = r.samples_since(self._sent)  # only what came since the last tick
            if new.size:
                self.runner.send(new.copy())
                self._sent += new.size
        if draw:
            self._draw_recording(r.samples(), r.sample_rate)
        if not r.recording:  # the length limit (or the device went away)
            self.stop_recording()

    def _draw_recording(self, samples: np.ndarray, rate: int) -> None:
        self.rows.rows[0].set_audio(samples, rate)
        self.time_label.setText(f"{samples.size / rate:.1f} s recorded")
        if self._live and self._live_parts:
            voices = np.concatenate(self._live_parts, axis=1)
            for row, voice in zip(self.rows.rows[1:], voices):
                row.set_audio(voice, rate)
                row.wave.setXRange(0.0, max(samples.size / rate, 1e-3), padding=0.0)

    def stop_recording(self) -> None:
        r = self.recorder
        if r is None:
            return
        self._rec_timer.stop()
        r.stop()
        hit_limit = r.hit_limit
        samples = r.samples()
        self.recorder = None
        self._last_recording = samples
        self.level.setValue(0)
        self._update_record_controls()
        if self._live:
            if samples.size > self._sent:
                self.runner.send(samples[self._sent:].copy())
                self._sent = samples.size
            self.runner.send("end")
            self.rows.rows[0].set_audio(samples, r.sample_rate)
            self.controls.set_status("Finishing the live separation…")
            return
        if samples.size == 0:
            self._restore_before_recording()
            self.controls.set_status("Nothing was recorded.", error=True)
            return
        self.set_input(InputAudio("Recording", samples, r.sample_rate))
        limit = f" (stopped at the {self.max_seconds.value()} s limit)" if hit_limit else ""
        status = f"Recorded {samples.size / r.sample_rate:.1f} s{limit}. Separate splits it into voices."
        self.controls.set_status(status)
        self._keep_recording(samples, r.sample_rate, status)

    def _keep_recording(self, samples: np.ndarray, rate: int, status: str) -> None:
        """Write the recording to the app's recordings folder in a job (says where, or why not)."""
        try:
            job = self.ctx.pool.submit(audio.keep_recording, samples, rate, recordings_dir(),
                                       name="Keep the recording", interactive=True)
        except RuntimeError:  # the window is closing: the job pool takes nothing more
            return
        self.kept_recording_job = job

        def done(path) -> None:
            self.kept_recording = path
            if self.controls.status.text() == status:
                self.controls.set_status(f"{status} (Kept as {path}.)")

        job.finished.connect(done)
        job.failed.connect(lambda message: self.controls.set_status(
            f"{status} It could not be kept on disk: {message}", error=True))

    def _on_live_results(self, items: list) -> None:
        looks = [i for i in items if isinstance(i, LiveInside)]
        if looks:
            look = looks[-1]
            voices = audio.last_samples(self._live_parts, look.mixture.size) if self._live_parts else ()
            self._show_inside(look.inside, look.mixture, tuple(voices), live=True)
        chunks = [i for i in items if isinstance(i, LiveChunk)]
        if not chunks:
            return
        self._live_parts += [c.sources for c in chunks if c.sources.size]
        last = chunks[-1]
        self.live_info.setText(live_latency_text(last, RECORD_TICK_MS / 1000, self._sent, self._live_rate))

    def _restore_before_recording(self) -> None:
        previous, result = self._before_recording
        if previous is not None:
            self.set_input(previous, result)

    def live_samples(self) -> int:
        """Separated samples per voice that live mode has given so far."""
        return sum(p.shape[1] for p in self._live_parts)

    def _on_live_ended(self, state: JobState) -> None:
        self._live = False
        self._update_record_controls()
        if self.recorder is not None:  # stopped (or failed) while recording
            r, self.recorder = self.recorder, None
            self._rec_timer.stop()
            r.stop()
            self._last_recording = r.samples()
            self.level.setValue(0)
            self._update_record_controls()
        result = self.job.value if state == JobState.FINISHED else None
        rate = self._live_rate
        if isinstance(result, SeparationResult) and result.mixture is not None:
            self.set_input(InputAudio("Live recording", result.mixture, rate), result)
            self.runner.set_progress(1.0)
            rtf = result.elapsed_s / max(result.seconds, 1e-9)
            self.update_learn(self._learn_values(result, rtf))
            status = f"Live separation done: {result.seconds:.1f} s, {result.sources.shape[0]} voices."
            self.controls.set_status(status)
            self._keep_recording(result.mixture, rate, status)
            return
        if state == JobState.FINISHED:
            self._restore_before_recording()
            self.controls.set_status("Nothing was recorded.", error=True)
            return
        # stopped or failed: keep what was recorded and what was separated of it (zeros after that)
        mixture = self._last_recording
        if mixture is None or mixture.size == 0:
            self._restore_before_recording()
            return
        n_src = self.live_model().n_src if self.live_model() is not None else 0
        voices = np.concatenate(self._live_parts, axis=1) if self._live_parts else np.zeros((n_src, 0), np.float32)
        voices = np.pad(voices, ((0, 0), (0, max(0, mixture.size - voices.shape[1]))))[:, :mixture.size]
        self.set_input(InputAudio("Live recording (stopped)", mixture, rate),
                       SeparationResult(voices, rate) if n_src else None)
        self._keep_recording(mixture, rate, self.controls.status.text())

    # -- playing -----------------------------------------------------------------------------------
    def gains(self) -> list[float]:
        """The rows' gains after solo and mute (what the Player plays with)."""
        return audio.solo_mute_gains([1.0] * len(self.rows.rows), self.rows.muted(), self.rows.solo())

    def _ensure_player(self) -> audio.Player | None:
        tracks = self.row_tracks()
        if not tracks or tracks[0].size == 0:
            return None
        if self.player is None:
            length = max(t.size for t in tracks)
            stacked = np.stack([np.pad(t, (0, length - t.size)) for t in tracks]).astype(np.float32)
            self.player = audio.Player(stacked, self.input.rate, stream_factory=OUTPUT_STREAM_FACTORY)
            self.player.seek(self.rows.rows[0].playhead_s if self.rows.rows else 0.0)
        self.player.set_gains(self.gains())
        return self.player

    def toggle_play(self) -> None:
        if self.player is not None and self.player.playing:
            self.stop_playing()
        else:
            self.play()

    def play(self) -> bool:
        if self.recorder is not None:
            return False
        player = self._ensure_player()
        if player is None:
            self.controls.set_status("Nothing to play yet.")
            return False
        try:
            player.play()
        except Exception as exc:  # noqa: BLE001 - UserError without speakers, or whatever the device says
            self.controls.set_status(friendly_message(exc), error=True)
            return False
        self.play_button.setText("Stop")
        self._play_timer.start()
        return True

    def play_row(self, k: int) -> None:
        """Play row k alone: it becomes the only soloed row (and is unmuted)."""
        for i, row in enumerate(self.rows.rows):
            for b, on in ((row.solo_button, i == k), (row.mute_button, row.muted and i != k)):
                b.blockSignals(True)
                b.setChecked(on)
                b.blockSignals(False)
        self._apply_gains()
        if self.player is None or not self.player.playing:
            self.play()

    def stop_playing(self) -> None:
        if self.player is not None:
            self.player.stop()
        self._play_timer.stop()
        self.play_button.setText("Play")

    def _stop_player(self) -> None:
        self.stop_playing()
        self.player = None

    def _apply_gains(self) -> None:
        if self.player is not None:
            self.player.set_gains(self.gains())

    def seek(self, seconds: float) -> None:
        duration = len(self.input.mixture) / self.input.rate if self.input is not None else 0.0
        seconds = min(max(0.0, float(seconds)), duration)
        if self.player is not None:
            self.player.seek(seconds)
        self.rows.set_playhead(seconds)
        self._update_time(seconds)

    def _play_tick(self) -> None:
        p = self.player
        if p is None:
            self._play_timer.stop()
            return
        position = p.position_s
        self.rows.set_playhead(position)
        self._update_time(position)
        if p.finished or not p.playing:
            self.stop_playing()

    def _update_time(self, seconds: float) -> None:
        duration = len(self.input.mixture) / self.input.rate if self.input is not None else 0.0
        self.time_label.setText(f"{seconds:.2f} / {duration:.2f} s")

    # -- saving ------------------------------------------------------------------------------------
    def save_row(self, k: int, path: str | None = None) -> str | None:
        tracks = self.row_tracks()
        if not 0 <= k < len(tracks):
            return None
        name = "mixture" if k == 0 else f"voice{k}"
        if path is None:
            suggested = str(Path(self._folder) / f"{name}.wav") if self._folder else f"{name}.wav"
            path, chosen = QFileDialog.getSaveFileName(self, f"Save the {name}", suggested, ";;".join(SAVE_FILTERS))
            if path and not Path(path).suffix and chosen in SAVE_FILTERS:
                path += SAVE_FILTERS[chosen]
        if not path:
            return None
        try:
            gain = audio.write_audio(path, tracks[k], self.input.rate)
        except Exception as exc:  # noqa: BLE001 - a bad name, a full disk: one line
            self.controls.set_status(friendly_message(exc), error=True)
            return None
        self._remember_folder(path)
        quieter = "" if gain == 1.0 else f" (scaled by {gain:.2f} so that it does not clip)"
        self.controls.set_status(f"Saved {Path(path).name}{quieter}.")
        self.ctx.show_message(f"Saved {path}")
        return path

    # -- the end -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self._rec_timer.stop()
        self._play_timer.stop()
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.player is not None:
            self.player.stop()
        self.runner.stop()
        for job in (self._load_job, self._causal_job, self._views_job):
            if job is not None and not job.is_done:
                job.cancel()
