"""The SOM core: the update rule, the grid geometry, training, metrics, maps, saving."""

import json
import math
import time

import numpy as np
import pytest
import torch

from playground.errors import BadFileError
from playground.ml.checkpoints import load_weights, save_weights
from playground.ml.som import (
    SOM,
    Grid,
    SOMConfig,
    SOMDivergedError,
    SOMSnapshot,
    fit,
    neighborhood_weights,
    schedule,
    train,
)
from playground.progress import Progress


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


def plane_xy(rows, cols, hexagonal):
    """Node positions written out independently of the module: odd hex rows shifted right."""
    pts = []
    for i in range(rows):
        for j in range(cols):
            if hexagonal:
                pts.append((j + 0.5 * (i % 2), i * math.sqrt(3) / 2))
            else:
                pts.append((float(j), float(i)))
    return np.array(pts)


def drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return events, done.value


# -- the update rule ----------------------------------------------------------------


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_online_steps_equal_the_formula_written_as_a_plain_loop(topology):
    rng = np.random.default_rng(1)
    rows, cols, n = 4, 5, 30
    data = rng.random((n, 3)).astype(np.float32)
    w0 = rng.random((rows * cols, 3)).astype(np.float32)
    config = SOMConfig(rows=rows, cols=cols, topology=topology, mode="online", order="sweep", epochs=2,
                       sigma0=2.0, sigma_end=0.5, lr0=0.5, lr_end=0.0, snapshots=0)
    got = fit(data, config, initial_weights=w0).weights.numpy()

    # W_v(s+1) = W_v(s) + theta(u, v, s) alpha(s) (D(s) - W_v(s)), in float64, node by node
    xy = plane_xy(rows, cols, topology == "hexagonal")
    total = 2 * n
    w = w0.astype(np.float64)
    for s in range(total):
        x = data[s % n].astype(np.float64)
        alpha = 0.5 + (0.0 - 0.5) * s / total
        sigma = 2.0 + (0.5 - 2.0) * s / total
        u = min(range(rows * cols), key=lambda v: sum((x - w[v]) ** 2))
        for v in range(rows * cols):
            d2 = sum((xy[u] - xy[v]) ** 2)
            theta = math.exp(-d2 / (2 * sigma**2))
            w[v] = w[v] + theta * alpha * (x - w[v])
    np.testing.assert_allclose(got, w, atol=1e-5)


def test_online_rule_with_a_learning_rate_of_one_and_other_neighbourhoods():
    """lr = 1 makes 1 - h = 0 at the BMU (the lazy form's special case); bubble moves a disc."""
    rng = np.random.default_rng(2)
    data = rng.random((10, 2)).astype(np.float32)
    w0 = rng.random((9, 2)).astype(np.float32)
    for kind in ("bubble", "triangle", "halving", "mexican_hat"):
        config = SOMConfig(rows=3, cols=3, neighborhood=kind, mode="online", order="sweep", epochs=1,
                           sigma0=1.5, sigma_end=1.0, lr0=1.0, lr_end=0.1, snapshots=0)
        got = fit(data, config, initial_weights=w0).weights.numpy()
        xy = plane_xy(3, 3, False)
        w = w0.astype(np.float64)
        for s in range(10):
            x = data[s].astype(np.float64)
            alpha, sigma = 1.0 + (0.1 - 1.0) * s / 10, 1.5 + (1.0 - 1.5) * s / 10
            u = int(((w - x) ** 2).sum(1).argmin())
            d = np.sqrt(((xy - xy[u]) ** 2).sum(1))
            steps = np.abs(xy - xy[u]).sum(1)
            theta = {"bubble": (d <= sigma) * 1.0, "triangle": np.clip(1 - d / sigma, 0, None),
                     "halving": 0.5**steps,
                     "mexican_hat": (1 - d**2 / sigma**2) * np.exp(-(d**2) / (2 * sigma**2))}[kind]
            w += (alpha * theta)[:, None] * (x - w)
        np.testing.assert_allclose(got, w, atol=1e-5, err_msg=kind)


def test_schedules_start_and_end_where_asked():
    p = np.array([0.0, 0.5, 1.0])
    assert schedule("linear", 0.5, 0.0, p).tolist() == [0.5, 0.25, 0.0]
    np.testing.assert_allclose(schedule("exponential", 1.0, 0.01, p), [1.0, 0.1, 0.01])
    inv = schedule("inverse_time", 10.0, 1.0, p)
    np.testing.assert_allclose(inv[[0, 2]], [10.0, 1.0])
    assert inv[0] > inv[1] > inv[2]


# -- the grid -------------------------------------------------------------------------


def test_hexagonal_inner_nodes_have_six_neighbours_at_distance_one():
    g = Grid(6, 7, "hexagonal")
    all_nodes = np.arange(g.n_nodes)
    for v in all_nodes:
        i, j = divmod(int(v), 7)
        d = g.distance(v, all_nodes)
        at_one = set(np.flatnonzero(np.isclose(d, 1.0)).tolist())
        assert set(g.neighbours(int(v))) == at_one
        assert (d[d > 0] >= 1 - 1e-9).all()  # nothing closer than a neighbour
        if 0 < i < 5 and 0 < j < 6:
            assert len(at_one) == 6
    # the positions and distances agree with the plane written out by hand
    xy = plane_xy(6, 7, True)
    np.testing.assert_allclose(g.xy, xy)
    np.testing.assert_allclose(g.distance(10, all_nodes), np.sqrt(((xy - xy[10]) ** 2).sum(1)))


def test_rectangular_neighbours_include_diagonals_unless_asked_not_to():
    g = Grid(4, 5)
    inner = 1 * 5 + 2
    assert g.neighbours(inner) == [1, 2, 3, 6, 8, 11, 12, 13]
    assert g.neighbours(inner, diagonals=False) == [2, 6, 8, 12]
    assert g.neighbours(0) == [1, 5, 6]


def test_toroidal_distances_wrap_around_both_edges():
    g = Grid(5, 6, "rectangular", toroidal=True)
    corner, far_corner = 0, 4 * 6 + 5
    assert g.distance(corner, far_corner) == pytest.approx(math.sqrt(2))
    assert far_corner in g.neighbours(corner)
    assert all(len(g.neighbours(v)) == 8 for v in range(g.n_nodes))
    # against the minimum over wrapped copies, for every pair from node 7
    xy = plane_xy(5, 6, False)
    diff = np.abs(xy - xy[7])
    diff = np.minimum(diff, np.array([6, 5]) - diff)
    np.testing.assert_allclose(g.distance(7, np.arange(30)), np.sqrt((diff**2).sum(1)))
    hexa = Grid(6, 6, "hexagonal", toroidal=True)
    for v in range(hexa.n_nodes):
        nb = hexa.neighbours(v)
        assert len(nb) == 6
        np.testing.assert_allclose(hexa.distance(v, np.array(nb)), 1.0)


def test_offset_tables_match_direct_distances():
    for topology in ("rectangular", "hexagonal"):
        for toroidal in (False, True):
            g = Grid(4, 5, topology, toroidal)
            for u in range(g.n_nodes):
                np.testing.assert_allclose(g.d2_from(u), g.distance(u, np.arange(g.n_nodes)) ** 2, atol=1e-12)


def test_halving_counts_grid_steps():
    rect = Grid(5, 5)
    steps = rect.steps_from(12).reshape(5, 5)
    assert steps[0, 0] == 4 and steps[1, 3] == 2 and steps[2, 2] == 0
    hexa = Grid(7, 7, "hexagonal")
    centre = 3 * 7 + 3
    h = neighborhood_weights("halving", hexa.d2_from(centre), hexa.steps_from(centre), sigma=1.0)
    assert sorted(np.flatnonzero(h == 0.5).tolist()) == hexa.neighbours(centre)
    ring2 = np.flatnonzero(h == 0.25)
    assert len(ring2) == 12  # the second hex ring


# -- training -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_a_chain_trained_on_uniform_numbers_comes_out_ordered(mode):
    x = np.random.default_rng(0).random((300, 1)).astype(np.float32)
    som = fit(x, SOMConfig(rows=1, cols=20, init="random", mode=mode, epochs=10, sigma0=5, seed=3))
    w = som.weights.numpy().ravel()
    steps = np.diff(w)
    assert (steps > 0).all() or (steps < 0).all(), w
    assert w.min() < 0.15 and w.max() > 0.85  # and it spans the data


def test_quantization_error_falls_during_online_training(digits):
    config = SOMConfig(rows=8, cols=8, mode="online", epochs=3, snapshots=10, init="random")
    start = SOM(config, 64)
    start.init_weights(digits)
    events, som = drain(train(digits, config))
    snaps = [e for e in events if isinstance(e, SOMSnapshot)]
    assert 9 <= len(snaps) <= 11
    qe = [s.qe for s in snaps]
    assert qe[-1] < 0.6 * start.quantization_error(digits)
    assert qe[-1] < qe[0] and qe[-1] == min(qe)
    assert snaps[-1].fraction == 1.0 and snaps[-1].step == 3 * len(digits)
    assert [s.step for s in snaps] == sorted(s.step for s in snaps)
    assert snaps[-1].weights.shape == (8, 8, 64) and snaps[-1].weights.dtype == np.float32
    np.testing.assert_array_equal(snaps[-1].weights.reshape(64, 64), som.weights.numpy())
    assert any(isinstance(e, Progress) for e in events)


def test_pca_init_starts_with_lower_error_than_random(digits):
    som = SOM(SOMConfig(rows=10, cols=10), 64)
    som.init_weights(digits, "random")
    random_qe = som.quantization_error(digits)
    som.init_weights(digits, "pca")
    pca_qe = som.quantization_error(digits)
    assert pca_qe < 0.8 * random_qe
    first = som.weights.clone()
    som.init_weights(digits, "pca")
    assert torch.equal(first, som.weights)  # deterministic
    # the nodes lie on the plane of the first two principal components, through the mean,
    # spanning +-sqrt(3) standard deviations along each
    x = digits.astype(np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    stds = s[:2] / math.sqrt(len(x) - 1)
    w = som.weights.numpy().astype(np.float64) - mean
    coords = w @ vt[:2].T
    np.testing.assert_allclose(w, coords @ vt[:2], atol=1e-4)
    np.testing.assert_allclose(np.abs(coords).max(axis=0), math.sqrt(3) * stds, rtol=1e-3)


def test_batch_training_gives_one_snapshot_per_epoch_and_a_good_map(digits):
    config = SOMConfig(rows=10, cols=10, mode="batch", epochs=6)
    events, som = drain(train(digits, config))
    snaps = [e for e in events if isinstance(e, SOMSnapshot)]
    assert [s.epoch for s in snaps] == [1, 2, 3, 4, 5, 6]
    assert snaps[-1].fraction == 1.0
    sigmas = [s.sigma for s in snaps]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(5.0)
    start = SOM(config, 64)
    start.init_weights(digits)
    qe, te = som.quality(digits)
    assert qe < 0.9 * start.quantization_error(digits)
    assert te < 0.1


def test_same_seed_same_map_and_other_seed_other_map():
    x = np.random.default_rng(5).random((200, 3)).astype(np.float32)
    config = SOMConfig(rows=5, cols=5, mode="online", init="samples", epochs=2, seed=7)
    a, b = fit(x, config), fit(x, config)
    assert torch.equal(a.weights, b.weights)
    c = fit(x, SOMConfig(rows=5, cols=5, mode="online", init="samples", epochs=2, seed=8))
    assert not torch.equal(a.weights, c.weights)


def test_online_result_does_not_depend_on_how_the_run_is_cut_up(digits):
    """Snapshots and time-boxed chunks split the work; the map must come out the same."""
    base = dict(rows=7, cols=8, mode="online", epochs=2, seed=4)
    a = fit(digits[:700], SOMConfig(**base, snapshots=0))
    b = fit(digits[:700], SOMConfig(**base, snapshots=37))
    assert torch.equal(a.weights, b.weights)


def test_every_topology_and_neighbourhood_trains(digits):
    x = digits[:300]
    for topology in ("rectangular", "hexagonal"):
        for toroidal in (False, True):
            for kind in ("gaussian", "bubble", "triangle", "halving", "mexican_hat"):
                for mode in ("online", "batch"):
                    lr0 = 0.02 if kind == "mexican_hat" else 0.5  # its negative ring diverges at 0.5
                    config = SOMConfig(rows=4, cols=5 if not toroidal else 4, topology=topology, lr0=lr0,
                                       toroidal=toroidal, neighborhood=kind, mode=mode, epochs=2, sigma0=2.0)
                    if config.validate():  # mexican hat + batch is refused
                        continue
                    som = fit(x, config)
                    assert torch.isfinite(som.weights).all(), (topology, toroidal, kind, mode)


def test_a_diverging_run_stops_with_a_readable_error(digits):
    config = SOMConfig(rows=4, cols=5, neighborhood="mexican_hat", mode="online", epochs=3, lr0=0.5)
    with pytest.raises(SOMDivergedError, match="learning rate"):
        fit(digits[:300], config)


def test_generator_can_be_closed_early_and_yields_often(digits):
    config = SOMConfig(rows=30, cols=30, mode="online", epochs=200)  # minutes of work if left alone
    gen = train(digits, config)
    t0 = time.perf_counter()
    gaps, last = [], t0
    for event in gen:
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        if isinstance(event, Progress) and event.fraction and event.fraction > 0:
            if len(gaps) >= 5:
                break
    gen.close()
    assert time.perf_counter() - t0 < 5
    assert max(gaps) < 1.0  # 0.1 s by design; generous for a busy test machine
    with pytest.raises(StopIteration):
        next(gen)


def test_should_stop_ends_with_a_final_snapshot(digits):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 2

    for mode in ("online", "batch"):
        calls.clear()
        events, som = drain(train(digits, SOMConfig(rows=6, cols=6, mode=mode, epochs=50), should_stop=stop))
        snaps = [e for e in events if isinstance(e, SOMSnapshot)]
        assert isinstance(som, SOM) and snaps
        assert snaps[-1].fraction < 0.5
        np.testing.assert_array_equal(snaps[-1].weights.reshape(36, 64), som.weights.numpy())


# -- metrics and maps -----------------------------------------------------------------


def test_quantization_and_topographic_error_by_hand():
    config = SOMConfig(rows=2, cols=3)
    w = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], dtype=np.float32)  # = the grid
    som = SOM(config, 2, weights=w)
    x = np.array([[0.1, 0.0], [2.0, 0.9], [1.0, 0.5]], dtype=np.float32)
    assert som.bmu(x).tolist() == [0, 5, 1] or som.bmu(x).tolist() == [0, 5, 4]
    assert som.quantization_error(x) == pytest.approx((0.1 + 0.1 + 0.5) / 3, abs=1e-6)
    assert som.topographic_error(x) == 0.0
    # a sample whose two best nodes sit at opposite ends of the map
    far = SOM(config, 2, weights=np.array([[0, 0], [5, 5], [5, 5.1], [5, 5.2], [5, 5.3], [0.2, 0]], np.float32))
    assert far.topographic_error(np.array([[0.1, 0.0]], np.float32)) == 1.0


def test_topographic_and_quantization_error_agree_with_minisom(digits):
    minisom = pytest.importorskip("minisom")
    som = fit(digits, SOMConfig(rows=7, cols=9, mode="batch", epochs=3))
    ref = minisom.MiniSom(7, 9, 64)
    ref._weights = som.weights_grid().astype(np.float64)
    qe, te = som.quality(digits)
    assert qe == pytest.approx(ref.quantization_error(digits), rel=1e-4)
    assert te == pytest.approx(ref.topographic_error(digits), abs=1e-9)


def test_u_matrix_hits_label_map_and_component_planes(digits):
    from sklearn.datasets import load_digits

    labels = load_digits().target
    som = fit(digits, SOMConfig(rows=6, cols=7, mode="batch", epochs=4))
    u = som.u_matrix()
    assert u.shape == (6, 7) and (u > 0).all()
    hits = som.hits(digits)
    assert hits.shape == (6, 7) and hits.sum() == len(digits)
    lm = som.label_map(digits, labels)
    assert lm.shape == (6, 7)
    assert ((lm == -1) == (hits == 0)).all()
    assert set(np.unique(lm[lm >= 0])) <= set(range(10)) and len(np.unique(lm[lm >= 0])) >= 8
    # the majority label really is the most common one among the node's samples
    b = som.bmu(digits)
    node = int(np.argmax(hits))
    assert lm.ravel()[node] == np.bincount(labels[b == node]).argmax()
    planes = som.component_planes()
    assert planes.shape == (64, 6, 7)
    np.testing.assert_array_equal(planes[10].ravel(), som.weights.numpy()[:, 10])


def test_label_map_marks_nodes_without_samples():
    som = SOM(SOMConfig(rows=1, cols=3), 1, weights=np.array([[0.0], [1.0], [100.0]], dtype=np.float32))
    x = np.array([[0.1], [0.2], [0.9], [1.1], [1.2]], dtype=np.float32)
    assert som.label_map(x, [2, 2, 0, 1, 1]).tolist() == [[2, 1, -1]]
    assert som.hits(x).tolist() == [[2, 3, 0]]


def test_u_matrix_by_hand():
    config = SOMConfig(rows=2, cols=2)
    som = SOM(config, 1, weights=np.array([[0.0], [0.0], [0.0], [3.0]], dtype=np.float32))
    u = som.u_matrix()
    # every node touches the other three (diagonals count); node 3 is 3 away from all of them
    np.testing.assert_allclose(u, [[1.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(som.u_matrix(diagonals=False), [[0.0, 1.5], [1.5, 3.0]])


# -- saving ---------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, digits):
    config = SOMConfig(rows=5, cols=4, topology="hexagonal", mode="online", epochs=1, seed=3)
    som = fit(digits[:200], config)
    som.meta = {"dataset": "digits"}
    path = tmp_path / "map.safetensors"
    som.save(path)
    side = json.loads((tmp_path / "map.json").read_text())
    assert side["config"]["topology"] == "hexagonal" and side["dim"] == 64
    back = SOM.load(path)
    assert back.config == config
    assert torch.equal(back.weights, som.weights)
    assert back.meta == {"dataset": "digits"}
    assert back.quantization_error(digits) == pytest.approx(som.quantization_error(digits))
    # the weights file is safetensors: an 8-byte header length, then JSON
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])["weights"]["shape"] == [20, 64]


def test_load_refuses_a_file_that_is_not_a_saved_map(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something else"}))
    (tmp_path / "x.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BadFileError, match="x.safetensors"):
        SOM.load(tmp_path / "x.safetensors")
    save_weights(tmp_path / "x.safetensors", {"weights": torch.zeros(4, 2)}, {"kind": "something else"})
    with pytest.raises(BadFileError, match="x.json does not describe a saved SOM"):
        SOM.load(tmp_path / "x.safetensors")
    (tmp_path / "x.json").unlink()
    with pytest.raises(BadFileError, match="has no x.json next to it"):
        SOM.load(tmp_path / "x.safetensors")


def test_maps_saved_before_the_shared_weights_format_still_open(tmp_path):
    """What SOM.save wrote before checkpoints.save_weights: safetensors metadata and a sidecar without 'tensors'."""
    from safetensors.torch import save_file

    w = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    config = SOMConfig(rows=2, cols=3, topology="hexagonal", mode="online", epochs=3)
    save_file({"weights": w}, str(tmp_path / "old.safetensors"), metadata={"format": "playground-som", "version": "1"})
    (tmp_path / "old.json").write_text(json.dumps({"format": "playground-som", "version": 1, "dim": 4,
                                                   "config": config.to_dict(), "meta": {"dataset": "iris"}}))
    som = SOM.load(tmp_path / "old.safetensors")
    assert som.config == config and som.dim == 4 and som.meta == {"dataset": "iris"}
    assert torch.equal(som.weights, w)


def test_a_saved_map_is_written_in_the_shared_weights_format(tmp_path):
    som = SOM(SOMConfig(rows=2, cols=2), 3, weights=np.ones((4, 3), np.float32))
    som.save(tmp_path / "m.safetensors")
    tensors, side = load_weights(tmp_path / "m.safetensors")
    assert side["format"] == "playground-weights" and side["kind"] == "som" and side["tensors"] == {"weights": [4, 3]}
    assert torch.equal(tensors["weights"], torch.ones(4, 3))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


def test_load_refuses_pickles_in_either_file(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    evil = pickle.dumps({"weights": _Payload(marker)}, protocol=2)
    pickle.loads(evil)
    assert marker.exists()  # the payload is live
    marker.unlink()
    SOM(SOMConfig(rows=2, cols=2), 3).save(tmp_path / "m.safetensors")
    good = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(evil)
    with pytest.raises(BadFileError, match="m.safetensors"):
        SOM.load(tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").write_bytes(good)
    (tmp_path / "m.json").write_bytes(evil)
    with pytest.raises(BadFileError, match="m.json is not valid JSON"):
        SOM.load(tmp_path / "m.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    (lambda s: s["config"].update(rows="ten"), r"m\.json is damaged: The number of rows .*'ten'"),
    (lambda s: s["config"].update(topology=5), r"m\.json is damaged: Unknown topology 5"),
    (lambda s: s["config"].update(toroidal="yes"), "'toroidal' must be true or false"),
    (lambda s: s.update(config=[3, 4]), "config must be an object, not list"),
    (lambda s: s.update(meta=[]), "'meta' must be an object"),
    (lambda s: s.update(dim="3"), "'dim' must be a whole number"),
    (lambda s: s.update(dim=5), r"m\.safetensors does not fit its m\.json: the weights are 6x3 but a 2 x 3 map of 5"),
    (lambda s: s["config"].update(rows=3), r"the weights are 6x3 but a 3 x 3 map of 3 features needs 9x3"),
])
def test_load_refuses_a_sidecar_with_wrong_values(tmp_path, change, words):
    SOM(SOMConfig(rows=2, cols=3), 3).save(tmp_path / "m.safetensors")
    side = json.loads((tmp_path / "m.json").read_text())
    change(side)
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(BadFileError, match=words):
        SOM.load(tmp_path / "m.safetensors")


def test_load_refuses_weights_of_the_wrong_type(tmp_path):
    save_weights(tmp_path / "m.safetensors", {"weights": torch.zeros(4, 2, dtype=torch.int64)},
                 {"kind": "som", "dim": 2, "config": SOMConfig(rows=2, cols=2).to_dict(), "meta": {}})
    with pytest.raises(BadFileError, match="not floating point"):
        SOM.load(tmp_path / "m.safetensors")


# -- validation -----------------------------------------------------------------------


def test_default_config_is_valid():
    assert SOMConfig().validate() == []


@pytest.mark.parametrize("changes, words", [
    ({"rows": 0}, "rows"),
    ({"cols": 101}, "cols"),
    ({"rows": 2.5}, "rows"),
    ({"rows": 1, "cols": 1}, "2 nodes"),
    ({"topology": "triangular"}, "topology"),
    ({"neighborhood": "cosine"}, "neighborhood"),
    ({"lr0": 0.0}, "learning rate"),
    ({"lr0": 1.5}, "learning rate"),
    ({"lr_schedule": "exponential", "lr_end": 0.0}, "above 0"),
    ({"sigma0": -1.0}, "radius"),
    ({"sigma_end": 0.0}, "radius"),
    ({"epochs": 0}, "epochs"),
    ({"init": "zeros"}, "init"),
    ({"mode": "minibatch"}, "mode"),
    ({"topology": "hexagonal", "toroidal": True, "rows": 5}, "even number of rows"),
    ({"mode": "batch", "neighborhood": "mexican_hat"}, "batch"),
])
def test_config_validation_explains_what_is_wrong(changes, words):
    config = SOMConfig(**changes)
    problems = config.validate()
    assert len(problems) == 1 and words in problems[0], problems
    with pytest.raises(ValueError, match=words):
        SOM(config, 3)


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        fit(np.array([[0.0, np.nan], [1.0, 2.0]]), SOMConfig(rows=2, cols=2))
    som = SOM(SOMConfig(rows=2, cols=2), 3)
    with pytest.raises(ValueError, match="3 features"):
        som.bmu(np.zeros((4, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA here")
def test_training_on_cuda_matches_cpu(digits):
    config = SOMConfig(rows=6, cols=6, mode="batch", epochs=3)
    a, b = fit(digits, config), fit(digits, config, device="cuda")
    assert b.weights.device.type == "cuda"
    torch.testing.assert_close(a.weights, b.weights.cpu(), atol=1e-4, rtol=1e-4)


def test_snapshots_carry_every_samples_bmu_when_all_were_measured(digits, monkeypatch):
    import playground.ml.som as somlib

    config = SOMConfig(rows=6, cols=7, mode="batch", epochs=3)
    snaps = [e for e in train(digits, config) if isinstance(e, SOMSnapshot)]
    assert len(snaps) == 3
    for snap in snaps:
        som = SOM(config, digits.shape[1], weights=snap.weights.reshape(-1, digits.shape[1]))
        expected = som.bmu(digits)
        np.testing.assert_array_equal(snap.bmus, expected)
        np.testing.assert_array_equal(som.hits(bmus=snap.bmus), som.hits(digits))
        labels = np.arange(len(digits)) % 4
        np.testing.assert_array_equal(som.label_map(None, labels, bmus=snap.bmus), som.label_map(digits, labels))
    # QE/TE on a subsample: no BMUs for all (the viewer finds them itself).
    monkeypatch.setattr(somlib, "METRIC_SAMPLE", 100)
    snaps = [e for e in train(digits, config) if isinstance(e, SOMSnapshot)]
    assert all(s.bmus is None for s in snaps)
