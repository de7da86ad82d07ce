"""Data sets: offline sets, downloads from a local HTTP server, offline errors, image folders."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zlib
from functools import partial

import numpy as np
import pytest

from playground.errors import BadFileError, OfflineError, UserError
from playground.ml.training import data as datamod
from playground.progress import Progress


def test_digits_split_and_scale():
    b = datamod.load_digits(val_fraction=0.25, seed=3)
    assert b.input_shape == (1, 8, 8)
    assert len(b.train_x) + len(b.val_x) == 1797
    assert abs(len(b.val_x) - 0.25 * 1797) <= 1
    assert 0.0 <= float(b.train_x.min()) and float(b.train_x.max()) <= 1.0
    assert b.num_classes == 10
    # The split is a function of the seed.
    again = datamod.load_digits(val_fraction=0.25, seed=3)
    other = datamod.load_digits(val_fraction=0.25, seed=4)
    assert (again.val_y == b.val_y).all()
    assert not (other.val_x == b.val_x).all()


def test_mnist1d_is_built_offline_and_matches_the_published_data():
    d = datamod.mnist1d_arrays()
    assert d["x"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    # sha256 prefix of the published labels (shared/reference, section 4). The float inputs
    # match the published pickle only to ~1e-15, so their bytes differ between machines.
    assert hashlib.sha256(np.ascontiguousarray(d["y"]).tobytes()).hexdigest().startswith("d97dc7aecec8ad6b")
    assert np.isfinite(d["x"]).all() and 0.5 < d["x"].std() < 5
    b = datamod.load_mnist1d()
    assert b.input_shape == (40,) and not b.is_image


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist_server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a tiny MNIST in the real file format."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (30, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(np.arange(30) % 10),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (10, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(np.arange(10)),
    }
    for name, content in files.items():
        (served / name).write_bytes(content)
    table = [(name, hashlib.md5(content).hexdigest()) for name, content in files.items()]
    monkeypatch.setattr(datamod, "_download_table", lambda name: (["unused"], table))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(datamod.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    yield served
    server.shutdown()


def test_download_from_local_server_with_progress(fake_mnist_server, tmp_path):
    gen = datamod.load_dataset("mnist", root=tmp_path / "cache")
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration as stop:
        bundle = stop.value
    assert any(isinstance(p, Progress) and p.text.startswith("Downloading") for p in progress)
    assert bundle.input_shape == (1, 28, 28)
    assert len(bundle.train_x) == 30 and len(bundle.val_x) == 10
    assert bundle.val_y.tolist() == list(range(10))
    # Second load: no download at all.
    again = list(datamod.fetch_files("mnist", tmp_path / "cache" / "mnist"))
    assert again == []


def test_corrupt_download_is_refused(fake_mnist_server, tmp_path):
    (fake_mnist_server / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not what the checksum says")
    with pytest.raises(UserError, match="checksum"):
        datamod.load_dataset_now("mnist", root=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv(datamod.MIRROR_ENV, "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(OfflineError, match="offline") as info:
        datamod.load_dataset_now("fashion_mnist", root=tmp_path)
    assert "MNIST-1D" in str(info.value)
    assert str(info.value).startswith("Could not download Fashion-MNIST (train-images-idx3-ubyte.gz). Are you offline?")


def test_download_still_importable_from_data():
    from playground.ml import download

    assert datamod.download is download.download


# -- CIFAR-10 through the restricted unpickler ---------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder, monkeypatch):
    handler = partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(datamod.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    return server


def _cifar_tar(batches: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _batch(n: int, first_label: int) -> bytes:
    rng = np.random.default_rng(first_label)
    # as the real batches (Python 2 pickles whose str keys read back as str with latin-1)
    return pickle.dumps({"batch_label": "test", "labels": [(first_label + k) % 10 for k in range(n)],
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, protocol=2)


def _serve_cifar(tmp_path, monkeypatch, batches):
    served = tmp_path / "served"
    served.mkdir()
    blob = _cifar_tar(batches)
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    table = [("cifar-10-python.tar.gz", hashlib.md5(blob).hexdigest())]
    monkeypatch.setattr(datamod, "_download_table", lambda name: (["unused"], table))
    return _serve(served, monkeypatch)


def test_cifar10_is_downloaded_unpacked_and_read(tmp_path, monkeypatch):
    batches = {f"data_batch_{i}": _batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = _batch(3, 0)
    server = _serve_cifar(tmp_path, monkeypatch, batches)
    try:
        bundle = datamod.load_dataset_now("cifar10", root=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert bundle.input_shape == (3, 32, 32) and len(bundle.train_x) == 20 and len(bundle.val_x) == 3
    assert bundle.val_y.tolist() == [0, 1, 2] and bundle.train_y[:4].tolist() == [1, 2, 3, 4]
    raw = pickle.loads(batches["data_batch_1"])["data"].reshape(-1, 3, 32, 32)
    assert np.allclose(bundle.train_x[:4].numpy(), raw / 255)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_cifar_batch_that_runs_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    evil = pickle.dumps({"data": _Payload(marker), "labels": []}, protocol=2)
    pickle.loads(evil)
    assert marker.exists()  # the payload is live ...
    marker.unlink()
    (tmp_path / "data_batch_1").write_bytes(evil)
    with pytest.raises(BadFileError, match=r"CIFAR-10 batch data_batch_1: the safe loader refuses (posix|nt)\.system"):
        datamod.read_cifar_batch(tmp_path / "data_batch_1")
    # ... and refused the same way when it arrives inside the download
    batches = {f"data_batch_{i}": _batch(2, i) for i in range(1, 6)}
    batches["data_batch_3"] = evil
    batches["test_batch"] = _batch(2, 0)
    server = _serve_cifar(tmp_path, monkeypatch, batches)
    try:
        with pytest.raises(BadFileError, match="data_batch_3: the safe loader refuses"):
            datamod.load_dataset_now("cifar10", root=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert not marker.exists()


def test_a_cifar_batch_without_data_is_refused(tmp_path):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"labels": [1]}, protocol=2))
    with pytest.raises(BadFileError, match="does not hold 'data' and 'labels'"):
        datamod.read_cifar_batch(tmp_path / "test_batch")


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (tmp_path / cls).mkdir()
        for k in range(6):
            Image.new("RGB", (40 + k, 30), colour).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"this is not a jpeg")
    bundle = datamod.load_dataset_now("folder", folder=str(tmp_path), image_size=16, val_fraction=0.25)
    assert bundle.classes == ["cats", "dogs"]
    assert bundle.input_shape == (3, 16, 16)
    assert len(bundle.train_x) + len(bundle.val_x) == 12
    assert "1 unreadable" in bundle.split_note
    # Red images are class 0, blue ones class 1.
    x = np.concatenate([bundle.train_x.numpy(), bundle.val_x.numpy()])
    y = np.concatenate([bundle.train_y.numpy(), bundle.val_y.numpy()])
    assert (x[y == 0, 0].mean() > x[y == 0, 2].mean()) and (x[y == 1, 2].mean() > x[y == 1, 0].mean())


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its pixel data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pictures_too_big_to_decode_are_skipped(tmp_path, monkeypatch):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            Image.new("RGB", (20, 20), (40 * k, 0, 0)).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "a" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # over PIL's refusal limit
    Image.new("RGB", (60, 60)).save(tmp_path / "b" / "big.png")  # 3600 pixels: over the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # PIL only warns between 3000 and 6000
    bundle = datamod.load_dataset_now("folder", folder=str(tmp_path), image_size=8, val_fraction=0.25)
    assert len(bundle.train_x) + len(bundle.val_x) == 6
    assert "2 unreadable files skipped" in bundle.split_note
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the big picture is fine again, the bomb is not
    bundle = datamod.load_dataset_now("folder", folder=str(tmp_path), image_size=8, val_fraction=0.25)
    assert len(bundle.train_x) + len(bundle.val_x) == 7 and "1 unreadable files skipped" in bundle.split_note


def test_image_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(UserError, match="two sub-folders"):
        datamod.load_dataset_now("folder", folder=str(tmp_path))
    with pytest.raises(UserError, match="not a folder"):
        datamod.load_dataset_now("folder", folder=str(tmp_path / "missing"))


def test_unknown_dataset():
    with pytest.raises(UserError, match="Unknown data set"):
        datamod.load_dataset_now("imagenet")


def test_mnist1d_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path))
    datamod.mnist1d_arrays.cache_clear()
    try:
        built = datamod.mnist1d_arrays()
        assert (tmp_path / "datasets" / "mnist1d.npz").exists()
        datamod.mnist1d_arrays.cache_clear()
        cached = datamod.mnist1d_arrays()
        for k in datamod.MNIST1D_KEYS:
            assert np.array_equal(built[k], cached[k])
    finally:
        datamod.mnist1d_arrays.cache_clear()
