"""Data sets for the SOM viewer: the built-ins and CSV files, good and bad."""

import numpy as np
import pytest

from playground.errors import UserError, friendly_message
from playground.ml import som_data
from playground.ml.som_data import SOMDataError, load, load_csv


@pytest.mark.parametrize("name, shape, classes, image_shape", [
    ("rgb", (1000, 3), 9, None),
    ("iris", (150, 4), 3, None),
    ("wine", (178, 13), 3, None),
    ("digits", (1797, 64), 10, (8, 8)),
])
def test_builtin_sets(name, shape, classes, image_shape):
    d = load(name)
    assert d.name == name
    assert d.x.shape == shape and d.x.dtype == np.float32 and np.isfinite(d.x).all()
    assert d.labels.shape == (shape[0],) and d.labels.min() >= 0 and d.labels.max() < classes
    assert len(d.label_names) == classes and all(isinstance(n, str) for n in d.label_names)
    assert len(d.feature_names) == shape[1]
    assert d.image_shape == image_shape


def test_iris_and_wine_are_standardised_and_can_be_undone():
    from sklearn.datasets import load_wine

    d = load("wine")
    np.testing.assert_allclose(d.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(d.x * d.scale + d.mean, load_wine().data, rtol=1e-5)
    raw = load("iris", standardize=False)
    assert raw.mean is None and raw.x.max() > 5  # centimetres as they are


def test_digits_are_pixels_in_zero_to_one():
    d = load("digits")
    assert d.x.min() == 0.0 and d.x.max() == 1.0 and d.mean is None


def test_rgb_colours_are_seeded_and_labelled_by_the_nearest_named_colour():
    a, b, c = som_data.rgb(seed=1), som_data.rgb(seed=1), som_data.rgb(seed=2)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.feature_names == ["r", "g", "b"] and 0 <= a.x.min() and a.x.max() <= 1
    centres = np.array(list(som_data.NAMED_COLOURS.values()))
    for x, label in zip(a.x[:50], a.labels[:50]):
        assert label == np.argmin(((centres - x) ** 2).sum(axis=1))


def test_mnist1d_is_built_offline():
    d = load("mnist1d")
    assert d.x.shape == (4000, 40) and d.labels.shape == (4000,)
    assert sorted(set(d.labels.tolist())) == list(range(10))


def test_unknown_builtin_name():
    with pytest.raises(SOMDataError, match="Unknown data set"):
        load("cifar")


# -- CSV: good files ------------------------------------------------------------------


def write(tmp_path, text, name="data.csv", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_csv_with_header_and_word_labels(tmp_path):
    p = write(tmp_path, "height,weight,kind,colour\n1.0,10,cat,red\n2.0,20,dog,blue\n3.0,60,cat,red\n")
    d = load_csv(p, label_column="kind", standardize=False)
    assert d.name == "data"
    assert d.feature_names == ["height", "weight"]
    np.testing.assert_array_equal(d.x, [[1, 10], [2, 20], [3, 60]])
    assert d.label_names == ["cat", "dog"] and d.labels.tolist() == [0, 1, 0]
    assert "colour" in d.notes  # the text column that was left out


def test_csv_without_header_semicolons_and_label_by_number(tmp_path):
    p = write(tmp_path, "1;2;5\n3;4;7\n5;6;5\n")
    d = load_csv(p, label_column=2, standardize=False)
    assert d.feature_names == ["column 1", "column 2"]
    assert d.label_names == ["5", "7"] and d.labels.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(d.x, [[1, 2], [3, 4], [5, 6]])


def test_csv_is_standardised_by_default_and_tabs_work(tmp_path):
    p = write(tmp_path, "a\tb\n1\t100\n2\t200\n3\t300\n")
    d = load_csv(p)
    np.testing.assert_allclose(d.x.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(d.x.std(axis=0), 1, atol=1e-6)
    assert d.labels is None
    np.testing.assert_allclose(d.x * d.scale + d.mean, [[1, 100], [2, 200], [3, 300]], rtol=1e-6)


def test_numeric_labels_are_ordered_by_value(tmp_path):
    p = write(tmp_path, "x,y\n0.5,10\n0.1,2\n0.7,10\n")
    d = load_csv(p, label_column="y")
    assert d.label_names == ["2", "10"] and d.labels.tolist() == [1, 0, 1]


# -- CSV: bad files -------------------------------------------------------------------


def expect_error(path, *words, **kwargs):
    with pytest.raises(SOMDataError) as info:
        load_csv(path, **kwargs)
    message = str(info.value)
    for w in words:
        assert w in message, message
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    assert friendly_message(info.value) == message  # shown to the user as it is
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.csv", "not found", "nope.csv")


def test_a_folder_is_not_a_file(tmp_path):
    expect_error(tmp_path, "folder")


def test_binary_file(tmp_path):
    expect_error(write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.csv", "wb"), "binary")


def test_empty_files(tmp_path):
    expect_error(write(tmp_path, ""), "empty")
    expect_error(write(tmp_path, "\n  \n\n", "blank.csv"), "empty")
    expect_error(write(tmp_path, "a,b,c\n", "header.csv"), "no data")


def test_no_numeric_columns(tmp_path):
    expect_error(write(tmp_path, "name,city\nann,paris\nbob,rome\n"), "no numeric columns", "name, city")
    expect_error(write(tmp_path, "kind,name\n1,a\n2,b\n", "only_label.csv"), "no numeric columns", label_column="kind")


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "?"])
def test_missing_values_name_the_column_and_the_row(tmp_path, cell):
    p = write(tmp_path, f"a,b\n1,2\n3,4\n5,{cell}\n")
    expect_error(p, "column 'b'", "data row 3", "line 4", "missing")


def test_infinite_value(tmp_path):
    expect_error(write(tmp_path, "a,b\n1,inf\n2,3\n"), "column 'b'", "data row 1", "finite")


def test_missing_label(tmp_path):
    expect_error(write(tmp_path, "a,kind\n1,x\n2,\n3,y\n"), "label", "data row 2", label_column="kind")


def test_unknown_label_column(tmp_path):
    p = write(tmp_path, "a,b,kind\n1,2,x\n3,4,y\n")
    expect_error(p, "Unknown label column 'species'", "a, b, kind", label_column="species")
    expect_error(p, "Unknown label column 7", "0 to 2", label_column=7)


def test_ragged_rows(tmp_path):
    expect_error(write(tmp_path, "a,b,c\n1,2,3\n4,5\n"), "line 3", "2 fields")


# -- single samples from a file ----------------------------------------------------------


def test_a_drawn_digit_picture_reads_as_its_digit(tmp_path):
    """Digits drawn big, dark on light, off-centre, come back close to their own class."""
    from PIL import Image

    d = load("digits")
    rng = np.random.default_rng(1)
    right = 0
    picks = rng.choice(len(d.x), 20, replace=False)
    for k in picks:
        img = d.x[k].reshape(8, 8)
        big = np.kron(img, np.ones((12, 12)))  # 96 x 96
        page = np.ones((160, 200))
        page[20:116, 70:166] = 1.0 - big  # black ink on white paper, not centred
        path = tmp_path / f"digit{k}.png"
        Image.fromarray((page * 255).astype(np.uint8)).save(path)
        x, names = som_data.load_samples(path, 64, d)
        assert x.shape == (1, 64) and names == [path.name]
        assert 0.99 <= x.max() <= 1.0 and x.min() >= 0
        others = np.delete(np.arange(len(d.x)), k)
        nearest = others[np.argmin(((d.x[others] - x) ** 2).sum(1))]
        right += d.labels[nearest] == d.labels[k]
    assert right >= 16


def test_a_digit_on_a_transparent_page_reads_as_ink(tmp_path):
    from PIL import Image

    d = load("digits")
    ink = np.kron(d.x[0].reshape(8, 8), np.ones((10, 10)))
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 3] = (ink * 255).astype(np.uint8)  # black ink, opaque where drawn, clear elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    x, _ = som_data.load_samples(tmp_path / "clear.png", 64, d)
    assert x.max() > 0.9 and np.corrcoef(x[0], d.x[0])[0, 1] > 0.8


def test_text_samples_take_the_data_sets_standardisation(tmp_path):
    from sklearn.datasets import load_iris

    d = load("iris")
    raw = load_iris()
    path = tmp_path / "flowers.csv"
    header = ["species"] + list(raw.feature_names)
    lines = [",".join(header)] + [",".join([str(raw.target_names[raw.target[i]])]
                                           + [str(float(v)) for v in raw.data[i]]) for i in (0, 60, 140)]
    path.write_text("\n".join(lines) + "\n")
    x, names = som_data.load_samples(path, 4, d)
    assert names == ["flowers.csv, line 2", "flowers.csv, line 3", "flowers.csv, line 4"]
    np.testing.assert_allclose(x, d.x[[0, 60, 140]], atol=1e-5)

    # Without a header: any line with exactly 4 numbers; separated by spaces here.
    path = tmp_path / "one.txt"
    path.write_text("a comment line\n" + " ".join(str(float(v)) for v in raw.data[7]) + "\n1 2 3\n")
    x, names = som_data.load_samples(path, 4, d)
    assert names == ["one.txt, line 2"]
    np.testing.assert_allclose(x[0], d.x[7], atol=1e-5)


def test_bad_sample_files_say_why(tmp_path):
    from PIL import Image

    iris = load("iris")
    pic = tmp_path / "pic.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pic)
    with pytest.raises(SOMDataError, match="not trained on images"):
        som_data.load_samples(pic, 4, iris)
    short = tmp_path / "short.csv"
    short.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(SOMDataError, match="exactly 4 numbers"):
        som_data.load_samples(short, 4, iris)
    huge = tmp_path / "huge.txt"
    huge.write_text("1e308 1 2 3\n")
    with pytest.raises(SOMDataError, match="too large"):
        som_data.load_samples(huge, 4, iris)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(SOMDataError, match="not a readable picture"):
        som_data.load_samples(broken, 64, load("digits"))


def test_a_description_round_trips_through_json():
    import json

    d = load("iris")
    back = som_data.from_description(json.loads(json.dumps(som_data.describe(d))), d.n_features)
    assert back.n_samples == 0 and back.n_features == 4
    assert back.name == "iris" and back.feature_names == d.feature_names and back.label_names == d.label_names
    np.testing.assert_allclose(back.mean, d.mean, rtol=1e-6)
    np.testing.assert_allclose(back.scale, d.scale, rtol=1e-6)
    digits = som_data.from_description(som_data.describe(load("digits")), 64)
    assert digits.image_shape == (8, 8) and digits.mean is None


# -- big files: read in a job that can be cancelled, limits checked before memory is spent ---------

import struct  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

from playground.progress import Progress  # noqa: E402


def big_csv(tmp_path, rows=120_000, cols=6):
    rng = np.random.default_rng(0)
    x = rng.random((rows, cols))
    p = tmp_path / "big.csv"
    header = ",".join(f"f{j}" for j in range(cols))
    np.savetxt(p, x, delimiter=",", fmt="%.6f", header=header, comments="")
    return p, x


def test_reading_a_big_csv_can_be_cancelled_at_once(tmp_path):
    p, _ = big_csv(tmp_path)
    assert p.stat().st_size > 5_000_000
    gen = som_data.read_csv(p)
    first = next(gen)
    assert isinstance(first, Progress)
    t0 = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t0 < 0.5


def test_reading_a_big_csv_reports_progress_often_and_gives_what_load_csv_gives(tmp_path):
    p, x = big_csv(tmp_path)
    gen = som_data.read_csv(p, standardize=False)
    fractions, gaps, last = [], [], time.perf_counter()
    while True:
        try:
            item = next(gen)
        except StopIteration as done:
            data = done.value
            break
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        assert isinstance(item, Progress)
        fractions.append(item.fraction)
    assert len(fractions) > 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert max(gaps) < 0.5  # ~0.05 s by design; generous on a shared machine
    np.testing.assert_allclose(data.x, x, atol=1e-6)
    assert data.feature_names == [f"f{j}" for j in range(6)]
    again = load_csv(p, standardize=False)
    np.testing.assert_array_equal(again.x, data.x)


def test_a_csv_with_too_many_columns_is_refused_with_the_limit(tmp_path):
    p = write(tmp_path, "\n".join(",".join(["1"] * 5000) for _ in range(3)) + "\n", "wide.csv")
    message = expect_error(p, "5000 columns", str(som_data.MAX_FEATURES))
    assert "wide.csv" in message
    assert len(som_data.csv_columns(p)) == som_data.MAX_FEATURES + 1  # the header list stays bounded


def test_a_csv_too_big_for_the_memory_budget_is_refused_before_it_is_read(tmp_path, monkeypatch):
    p, _ = big_csv(tmp_path)
    monkeypatch.setattr(som_data, "MEMORY_BUDGET_BYTES", 1 << 20)
    gen = som_data.read_csv(p)
    t0 = time.perf_counter()
    with pytest.raises(SOMDataError, match="limit is 1 MB") as info:
        for _ in gen:
            pass
    assert time.perf_counter() - t0 < 0.5  # judged from the file's size, not by reading it all
    assert "rows x 6 columns" in str(info.value)


def test_the_memory_budget_holds_when_the_first_lines_mislead(tmp_path, monkeypatch):
    # Long first lines (padded with spaces) make the file look short; the running check catches it.
    lines = ["a,b"] + [f"{k}.0{' ' * 200},1" for k in range(6000)] + [f"{k},1" for k in range(400_000)]
    p = write(tmp_path, "\n".join(lines) + "\n", "misleading.csv")
    monkeypatch.setattr(som_data, "MEMORY_BUDGET_BYTES", 4 << 20)
    expect_error(p, "at least", "limit is 4 MB")


def test_a_line_too_long_is_refused(tmp_path):
    p = write(tmp_path, "a,b\n1,2\n" + "1" * (som_data.MAX_LINE_CHARS + 10) + "\n", "long.csv")
    expect_error(p, "line 3", "longer than")


def test_csv_columns_reads_only_the_start_of_a_file(tmp_path):
    # A first megabyte that is fine, then a row the full reader refuses: the header is still offered.
    body = "x,y,kind\n" + "1,2,a\n" * 200_000 + "1,2\n"
    p = write(tmp_path, body, "long.csv")
    assert p.stat().st_size > som_data.HEAD_BYTES
    assert som_data.csv_columns(p) == ["x", "y", "kind"]
    expect_error(p, "2 fields")
    assert som_data.csv_columns(tmp_path / "nope.csv") == []


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 7000])  # beyond PIL's own bomb guard, and beyond ours only
def test_a_huge_picture_is_refused_from_its_header(tmp_path, side):
    p = write(tmp_path, png_header(side, side), "huge.png", "wb")
    with pytest.raises(SOMDataError) as info:
        som_data.load_samples(p, 64, som_data.digits())
    message = str(info.value)
    assert f"{som_data.MAX_SAMPLE_PIXELS:,}" in message and "huge.png" in message
    assert "not a readable picture" not in message  # refused from the header, never decoded


def test_a_large_picture_is_shrunk_before_it_is_read(tmp_path):
    from PIL import Image, ImageDraw

    im = Image.new("L", (3000, 3000), 255)
    ImageDraw.Draw(im).rectangle([1200, 600, 1800, 2400], fill=0)  # a fat "1"
    p = tmp_path / "big.png"
    im.save(p)
    x, names = som_data.load_samples(p, 64, som_data.digits())
    assert x.shape == (1, 64) and names == ["big.png"]
    grid = x.reshape(8, 8)
    assert grid[:, 3:5].mean() > 0.8 and grid[:, 0].max() < 0.2  # ink in the middle columns only


def test_samples_for_a_map_of_too_many_features_are_refused(tmp_path):
    p = write(tmp_path, "1,2,3\n", "s.csv")
    with pytest.raises(SOMDataError, match=str(som_data.MAX_FEATURES)):
        som_data.load_samples(p, som_data.MAX_FEATURES + 1)


def test_reading_samples_is_a_generator_with_progress(tmp_path):
    p, x = big_csv(tmp_path, rows=60_000, cols=4)
    gen = som_data.read_samples(p, 4)
    assert isinstance(next(gen), Progress)
    gen.close()
    got, names = som_data.load_samples(p, 4)
    np.testing.assert_allclose(got, x, atol=1e-5)
    assert names[0] == "big.csv, line 2" and len(names) == 60_000


def test_snapshot_budget():
    assert som_data.snapshot_bytes(10, 10, 3, 50) == 51 * 10 * 10 * 3 * 4
    assert som_data.snapshot_bytes(10, 10, 3, 0, samples=100) == 10 * 10 * 3 * 4 + 100 * 8
    som_data.check_snapshot_budget(30, 30, 64, 50)  # the usual: a few MB
    with pytest.raises(SOMDataError) as info:
        som_data.check_snapshot_budget(100, 100, 784, 1000)
    message = str(info.value)
    assert "limit is 1.0 GB" in message and "1000 snapshots" in message
    fit = int(message.split("at most ")[1].split()[0])
    assert som_data.snapshot_bytes(100, 100, 784, fit) <= som_data.SNAPSHOT_BUDGET_BYTES
    assert som_data.snapshot_bytes(100, 100, 784, fit + 1) > som_data.SNAPSHOT_BUDGET_BYTES
