"""DragGAN and FreeDrag: tracking, radii, motion supervision, the mask term, commands, W/W+, and a run
on a stand-in generator (whose image is a pattern translated by the latent, so a drag must succeed)
and on a tiny real StyleGAN2 generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from playground.errors import BadFileError, UserError
from playground.ml import draggan as dg

SIZE = 32
W_DIM = 8
NUM_WS = 8
# How much each style vector moves the pattern; the 4th (index 3) does nothing, the last two are never optimised.
LAYER_WEIGHTS = [0.3, 0.2, 0.2, 0.0, 0.2, 0.1, 0.5, 0.5]
GAIN = 4.0  # pixels of shift per unit of latent


class ShiftSynthesis(nn.Module):
    """Features = a fixed smooth random pattern translated by ``GAIN * sum_k a_k ws[:, k, :2]`` pixels (x, y).

    Dragging a handle by d then means translating the whole pattern by d, which the latent
    can do exactly: a stand-in on which DragGAN is guaranteed to succeed.
    """

    def __init__(self, channels: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        pattern = torch.randn(1, channels, SIZE, SIZE, generator=g)
        for _ in range(2):
            pattern = F.avg_pool2d(pattern, 5, stride=1, padding=2, count_include_pad=False)
        pattern = (pattern - pattern.mean(dim=(2, 3), keepdim=True)) / pattern.std(dim=(2, 3), keepdim=True)
        self.register_buffer("pattern", pattern)
        self.register_buffer("layer_weights", torch.tensor(LAYER_WEIGHTS))
        self.block_resolutions = [4, 8, 16, SIZE]
        self.calls: list[tuple[int | None, bool]] = []

    def shift(self, ws: torch.Tensor) -> torch.Tensor:
        return GAIN * (self.layer_weights[None, :, None] * ws[:, :, :2]).sum(dim=1)

    def forward(self, ws, noise_mode="const", feature_block=None, stop_at_feature=False):
        self.calls.append((feature_block, stop_at_feature))
        t = self.shift(ws)[0]
        ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                                indexing="ij")
        gx = (xs - t[0]) / (SIZE - 1) * 2 - 1
        gy = (ys - t[1]) / (SIZE - 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)
        feat = F.grid_sample(self.pattern, grid, mode="bilinear", padding_mode="border", align_corners=True)
        img = torch.tanh(feat[:, :3])
        if feature_block is None:
            return img
        if feature_block != SIZE:
            feat = F.interpolate(feat, size=(feature_block, feature_block), mode="area")
        return (None if stop_at_feature else img), feat


class ShiftMapping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(W_DIM))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        w = 0.1 * z[:, :W_DIM]
        w = self.w_avg.lerp(w, truncation_psi)
        return w.unsqueeze(1).repeat(1, NUM_WS, 1)


class ShiftGenerator(nn.Module):
    z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws = W_DIM, 0, W_DIM, SIZE, 3, NUM_WS

    def __init__(self) -> None:
        super().__init__()
        self.mapping = ShiftMapping()
        self.synthesis = ShiftSynthesis()


def fast(**kwargs) -> dg.DragConfig:
    """Settings for the stand-in: a faster rate (it moves GAIN * lr px a step) and a 3 px motion disk."""
    base = dict(lr=0.05, r1=48.0, r2=96.0, max_steps=80)
    base.update(kwargs)
    return dg.DragConfig(**base)


def run_all(gen, commands_at: dict[int, list] | None = None):
    """Drive a run as the job pool does; send ``commands_at[k]`` as the value of the k-th yield (1-based)."""
    steps = []
    try:
        step = next(gen)
        while True:
            steps.append(step)
            step = gen.send((commands_at or {}).get(len(steps)))
    except StopIteration as stop:
        return steps, stop.value


# -- the pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("dx,dy", [(3, -2), (0, 0), (-4, 4), (1, 0)])
def test_tracker_finds_a_known_integer_shift_exactly(norm, dx, dy):
    torch.manual_seed(1)
    feat = torch.randn(1, 16, 40, 30)
    x, y = 12, 20
    reference = feat[0, :, y, x].clone()
    shifted = torch.roll(feat, shifts=(dy, dx), dims=(2, 3))
    found = dg.track_points(shifted, [reference], [(x, y)], radius=4, norm=norm)
    assert found == [(float(x + dx), float(y + dy))]


def test_tracker_window_is_clipped_at_the_border_and_limited_to_its_radius():
    torch.manual_seed(2)
    feat = torch.randn(1, 8, 20, 20)
    reference = feat[0, :, 0, 19].clone()
    # From a point near the corner, the reference pixel (19, 0) is inside the clipped window.
    assert dg.track_points(feat, [reference], [(17.4, 1.6)], radius=3) == [(19.0, 0.0)]
    # Out of reach (7 px away with radius 3): whatever is found lies within the square window.
    (fx, fy), = dg.track_points(feat, [reference], [(12, 7)], radius=3)
    assert abs(fx - 12) <= 3 and abs(fy - 7) <= 3 and (fx, fy) != (19.0, 0.0)


def test_radii_and_stop_distance_scale_with_the_image_as_the_official_code():
    assert dg.scaled_radius(3, 512) == 3 and dg.scaled_radius(12, 512) == 12
    assert dg.scaled_radius(3, 1024) == 6 and dg.scaled_radius(12, 1024) == 24
    assert dg.scaled_radius(12, 256) == 6 and dg.scaled_radius(3, 256) == 2  # round(1.5) == 2
    assert dg.scaled_radius(12, 64) == 2  # round(1.5)
    assert dg.scaled_radius(3, 64) == 1 and dg.scaled_radius(3, 32) == 1  # the official 0 is raised to 1 px
    assert dg.default_stop_distance(256) == 2 and dg.default_stop_distance(512) == 2
    assert dg.default_stop_distance(1024) == 4


def test_disk_holds_the_pixels_strictly_inside_the_radius():
    pixels = dg.disk_pixels((10.0, 7.0), 3, (20, 20))
    expected = {(x, y) for x in range(20) for y in range(20) if (x - 10) ** 2 + (y - 7) ** 2 < 9}
    assert {tuple(p) for p in pixels.tolist()} == expected and len(expected) == 25
    corner = dg.disk_pixels((0.0, 0.0), 2, (20, 20))
    assert {tuple(p) for p in corner.tolist()} == {(0, 0), (1, 0), (0, 1), (1, 1)}


def test_motion_loss_on_a_ramp_is_the_feature_slope_along_the_unit_step():
    # Channel c is the ramp g_c * x + h_c * y: F(q + d) - F(q) = g_c d_x + h_c d_y exactly under bilinear sampling.
    g, h = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 3.0])
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    feat = (g[:, None, None] * xs + h[:, None, None] * ys).unsqueeze(0).requires_grad_(True)
    loss = dg.motion_loss(feat, [(10.0, 12.0)], [(13.0, 16.0)], r1=2)
    d = torch.tensor([3.0, 4.0]) / 5.0
    assert loss.item() == pytest.approx((g * d[0] + h * d[1]).abs().mean().item(), rel=1e-5)
    loss.backward()
    assert feat.grad.abs().sum() > 0  # the gradient reaches the features (through F(q + d) only)


def test_motion_loss_ignores_a_handle_within_one_pixel_of_its_target():
    feat = torch.randn(1, 4, 16, 16)
    assert dg.motion_loss(feat, [(5.0, 5.0)], [(5.6, 5.7)], r1=2).item() == 0.0
    assert dg.motion_loss(feat, [(5.0, 5.0), (9.0, 9.0)], [(5.6, 5.7), (12.0, 9.0)], r1=2).item() > 0.0


def test_mask_term_is_zero_where_nothing_changes_in_the_fixed_area_and_positive_otherwise():
    torch.manual_seed(3)
    feat0 = torch.randn(1, 4, 16, 16)
    fixed = torch.ones(32, 32)
    fixed[8:24, 8:24] = 0  # the flexible square in the middle of a 32 px image
    assert dg.mask_loss(feat0.clone(), feat0, fixed).item() == 0.0
    inside = feat0.clone()
    inside[:, :, 7:9, 7:9] += 5.0  # feature pixels 7-8 cover image pixels ~13-18: all flexible
    assert dg.mask_loss(inside, feat0, fixed).item() == 0.0
    outside = feat0.clone()
    outside[:, :, 0, 0] += 5.0
    assert dg.mask_loss(outside, feat0, fixed).item() > 0.0
    # Equal to the official resize-then-subtract.
    up = lambda f: F.interpolate(f, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    assert dg.mask_loss(outside, feat0, fixed).item() == pytest.approx(
        F.l1_loss(up(outside) * fixed, up(feat0) * fixed).item(), rel=1e-5)


def test_freedrag_pieces_template_weight_and_line_search():
    assert dg.template_weight(0.2 * 0.3, 0.3) == pytest.approx(0.5)
    assert dg.template_weight(0.8 * 0.3, 0.3) == pytest.approx(0.1)
    assert dg.template_weight(-0.4 * 0.3, 0.3) == pytest.approx(0.9)
    offsets = dg.fuzzy_offsets(0.25)
    assert offsets.shape == (9, 2) and offsets.abs().max().item() == pytest.approx(0.75)
    torch.manual_seed(4)
    feat = F.avg_pool2d(torch.randn(1, 6, 40, 40), 5, stride=1, padding=2)
    start, target = torch.tensor([10.0, 10.0]), torch.tensor([30.0, 10.0])
    template = dg.fuzzy_feature(feat, start, dg.fuzzy_offsets(1.0))
    # A good match: it moves toward the target, at most d_max.
    moved = dg.line_search(feat, start, target, template, dg.fuzzy_offsets(1.0), 0.0, 0.0, 0.3, 3.0)
    assert 0 < moved[0].item() - 10 <= 3.0 + 1e-6 and moved[1].item() == pytest.approx(10.0)
    # Worse than at the start of the sub-motion: back by d_max (to 9.5), then candidates every 0.5 px over
    # twice d_max; the best match is the template's own place, 10.
    back = dg.line_search(feat, torch.tensor([12.0, 10.0]), target, template, dg.fuzzy_offsets(1.0), 0.1, 0.9,
                          0.3, 2.5)
    assert back.tolist() == pytest.approx([10.0, 10.0], abs=1e-5)
    # Better than at the start but not good: stay.
    stay = dg.line_search(feat, torch.tensor([12.0, 10.0]), target, template, dg.fuzzy_offsets(1.0), 0.9, 0.5,
                          0.3, 2.0)
    assert stay.tolist() == [12.0, 10.0]


def test_config_defaults_are_the_official_ones_and_bad_values_are_refused():
    c = dg.DragConfig()
    assert (c.space, c.r1, c.r2, c.max_steps, c.truncation_psi, c.noise_mode) == ("w+", 3.0, 12.0, 300, 0.7, "const")
    assert (c.learning_rate, c.mask_weight) == (1e-3, 20.0)
    f = dg.DragConfig(method="freedrag")
    assert (f.learning_rate, f.mask_weight, f.d_max, f.sub_steps) == (2e-3, 10.0, 3.0, 5)
    assert dg.DragConfig(lr=dg.FACE_LR).learning_rate == 2e-3
    for bad in (dict(space="z"), dict(lr=0.0), dict(r1=-1.0), dict(max_steps=0), dict(method="x"),
                dict(lambda_mask=float("nan"))):
        with pytest.raises(UserError):
            dg.DragConfig(**bad).validate()


# -- runs on the stand-in ------------------------------------------------------------------------------


def test_initial_ws_follows_the_official_recipe():
    G = ShiftGenerator()
    ws = dg.initial_ws(G, seed=5, truncation_psi=0.7)
    z = np.random.RandomState(5).randn(1, W_DIM)
    expected = 0.7 * 0.1 * torch.from_numpy(z).float()
    assert ws.shape == (1, NUM_WS, W_DIM)
    assert torch.allclose(ws[0, 3], expected[0]) and torch.allclose(ws[0, 0], ws[0, -1])


def test_draggan_moves_the_handle_and_stops_when_it_has_reached_the_target():
    G = ShiftGenerator()
    session = dg.DragSession(G, fast())
    assert (session.r1, session.r2, session.stop_distance, session.feature_block) == (3, 6, 2.0, SIZE)
    start_shift = G.synthesis.shift(session.ws)[0].clone()
    steps, result = run_all(session.run([(12.0, 14.0)], [(17.0, 14.0)]))
    assert result.reason == "reached" and result.distances[0] <= 2.0
    distances = [s.distances[0] for s in steps]
    assert distances[0] == pytest.approx(5.0) and distances[-1] < distances[0]
    assert result.steps == len(steps) < 80
    # Tracking followed the content: the handle moved with the pattern's translation (to the nearest pixel).
    moved = G.synthesis.shift(result.ws)[0] - start_shift
    assert abs(result.handles[0][0] - (12.0 + moved[0].item())) <= 1.0
    assert abs(result.handles[0][1] - (14.0 + moved[1].item())) <= 1.0
    assert moved[0].item() > 2.0 and abs(moved[1].item()) < 1.0
    # Every step rendered its image (render_every=1) from the same forward pass, and uint8 read-only.
    assert all(s.image is not None and s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8 for s in steps)
    assert not steps[0].image.flags.writeable
    assert result.image.shape == (SIZE, SIZE, 3)
    assert np.array_equal(result.image, dg.render(G, result.ws))


def test_max_steps_ends_the_run_and_steps_are_counted():
    session = dg.DragSession(ShiftGenerator(), fast(max_steps=3))
    steps, result = run_all(session.run([(10.0, 10.0)], [(25.0, 25.0)]))
    assert [s.step for s in steps] == [1, 2, 3] and result.reason == "max_steps" and result.steps == 3


def test_render_every_skips_the_image_and_the_upper_blocks():
    G = ShiftGenerator()
    session = dg.DragSession(G, fast(max_steps=6, render_every=3))
    G.synthesis.calls.clear()
    steps, result = run_all(session.run([(10.0, 10.0)], [(25.0, 25.0)]))
    assert [s.image is not None for s in steps] == [True, False, False, True, False, False]
    # Steps without an image stop at the feature block; the last (no-grad) pass renders the result.
    assert G.synthesis.calls[:3] == [(SIZE, False), (SIZE, True), (SIZE, True)]
    assert result.image is not None


def test_w_plus_and_w_optimise_the_right_parameters():
    for space in ("w+", "w"):
        G = ShiftGenerator()
        session = dg.DragSession(G, fast(space=space, max_steps=5))
        w0 = session.w0.clone()
        assert session.latent.shape == ((1, 6, W_DIM) if space == "w+" else (1, 1, W_DIM))
        _, result = run_all(session.run([(10.0, 10.0)], [(20.0, 10.0)]))
        ws = result.ws
        assert torch.equal(ws[:, 6:], w0[:, 6:])  # never optimised
        assert not torch.equal(ws[:, 0], w0[:, 0])
        if space == "w+":
            assert torch.equal(ws[:, 3], w0[:, 3])  # the 4th vector does not change the image: no gradient
        else:
            assert all(torch.equal(ws[:, k], ws[:, 0]) for k in range(6))  # one vector repeated
            assert not torch.equal(ws[:, 3], w0[:, 3])


def test_commands_take_effect_at_the_next_step():
    session = dg.DragSession(ShiftGenerator(), fast(max_steps=30, render_every=0))
    flexible = np.zeros((SIZE, SIZE), bool)
    flexible[4:28, 4:28] = True
    commands = {
        1: [dg.MovePoint(0, "target", 8.0, 22.0)],
        2: [dg.AddPair(20.0, 5.0, 26.0, 5.0), dg.RequestFrame(image=True, ws=True)],
        3: [dg.SetMask(mask_flexible=flexible)],
        5: [dg.RemovePair(0)],
        6: [dg.Stop()],
    }
    steps, result = run_all(session.run([(8.0, 8.0)], [(20.0, 8.0)]), commands)
    assert steps[0].targets == ((20.0, 8.0),) and steps[1].targets == ((8.0, 22.0),)
    assert len(steps[1].handles) == 1 and len(steps[2].handles) == 2
    assert steps[2].image is not None and steps[2].ws is not None and steps[1].ws is None and steps[3].image is None
    assert steps[2].ws.shape == (1, NUM_WS, W_DIM)
    assert steps[2].mask_loss == 0.0 and steps[3].mask_loss == 0.0  # F0 taken when the mask was set
    assert steps[4].mask_loss > 0.0  # the pattern moved under the fixed border
    assert steps[4].loss == pytest.approx(steps[4].motion_loss + 20.0 * steps[4].mask_loss, rel=1e-5)
    assert steps[5].targets == ((26.0, 5.0),)
    assert len(steps) == 6 and result.reason == "stopped" and result.steps == 6
    assert result.targets == ((26.0, 5.0),)


def test_moving_a_handle_takes_a_new_reference_there():
    session = dg.DragSession(ShiftGenerator(), fast(max_steps=4))
    steps, _ = run_all(session.run([(8.0, 8.0)], [(20.0, 8.0)]), {2: [dg.MovePoint(0, "handle", 15.0, 20.0)]})
    assert steps[2].handles == ((15.0, 20.0),)  # a fresh reference: taken where it was put, not tracked away
    assert abs(steps[3].handles[0][0] - 15.0) <= 1.0 and abs(steps[3].handles[0][1] - 20.0) <= 1.0


def test_bad_inputs_are_readable_errors():
    session = dg.DragSession(ShiftGenerator(), fast())
    with pytest.raises(UserError):
        next(session.run([], []))
    with pytest.raises(UserError):
        next(session.run([(1.0, 1.0)], [(2.0, 2.0), (3.0, 3.0)]))
    with pytest.raises(UserError):
        next(session.run([(1.0, 1.0)], [(40.0, 2.0)]))
    with pytest.raises(UserError):
        next(session.run([(1.0, 1.0)], [(4.0, 2.0)], np.zeros((8, 8), bool)))
    gen = session.run([(10.0, 10.0)], [(20.0, 10.0)])
    next(gen)
    with pytest.raises(UserError):
        gen.send([dg.RemovePair(3)])
    with pytest.raises(UserError):
        dg.DragSession(ShiftGenerator(), fast(feature_block=64))
    with pytest.raises(UserError):
        dg.DragSession(ShiftGenerator(), fast(), ws0=torch.zeros(1, 3, W_DIM))


def test_closing_the_generator_leaves_the_session_usable():
    session = dg.DragSession(ShiftGenerator(), fast())
    gen = session.run([(10.0, 10.0)], [(20.0, 10.0)])
    next(gen), next(gen)
    gen.close()
    assert session.ws.shape == (1, NUM_WS, W_DIM) and session.render().shape == (SIZE, SIZE, 3)
    moved = session.ws
    session.reset()
    assert torch.equal(session.ws, session.w0) and not torch.equal(moved, session.w0)


@pytest.mark.parametrize("block", [SIZE, 16])
def test_freedrag_runs_and_brings_the_localised_point_to_the_target(block):
    G = ShiftGenerator()
    session = dg.DragSession(G, fast(method="freedrag", l_expected=0.3, max_steps=150, feature_block=block))
    start_shift = G.synthesis.shift(session.ws)[0].clone()
    steps, result = run_all(session.run([(10.0, 14.0)], [(16.0, 14.0)]))
    distances = [s.distances[0] for s in steps]
    assert distances[-1] < distances[0] and min(distances) < 3.0
    assert result.reason == "reached" and result.distances[0] < 1.0
    moved = G.synthesis.shift(result.ws)[0] - start_shift
    assert moved[0].item() > 3.0  # the content really moved toward the target
    # The sub-motions: the localised point is constant within one, and moves at most d_max between them.
    jumps = [math.dist(a.handles[0], b.handles[0]) for a, b in zip(steps, steps[1:])]
    d_max_image_px = 3.0 * SIZE / block
    assert max(jumps) <= d_max_image_px + 1e-4 and sum(j == 0 for j in jumps) > len(jumps) / 2


def test_freedrag_takes_commands_and_stops():
    session = dg.DragSession(ShiftGenerator(), fast(method="freedrag", max_steps=50))
    steps, result = run_all(session.run([(10.0, 10.0)], [(20.0, 10.0)]),
                            {1: [dg.AddPair(5.0, 25.0, 5.0, 20.0)], 3: [dg.Stop()]})
    assert len(steps[0].handles) == 1 and len(steps[1].handles) == 2 and steps[1].targets[1] == (5.0, 20.0)
    # The new pair's first sub-motion: localised up to d_max (3 px here) from its handle toward its target.
    hx, hy = steps[1].handles[1]
    assert hx == pytest.approx(5.0) and 22.0 - 1e-4 <= hy < 25.0
    assert len(steps) == 3 and result.reason == "stopped" and len(result.handles) == 2


# -- latents on disk --------------------------------------------------------------------------------


def test_latents_round_trip_and_wrong_shapes_are_refused(tmp_path):
    G = ShiftGenerator()
    ws = dg.initial_ws(G, 3)
    path = dg.save_latent(tmp_path / "lat.safetensors", ws, {"seed": 3})
    assert torch.equal(dg.load_latent(path, G), ws)
    np.save(tmp_path / "official.npy", ws.numpy())
    loaded, image = dg.load_latent_and_render(tmp_path / "official.npy", G)
    assert torch.equal(loaded, ws) and np.array_equal(image, dg.render(G, ws))
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, W_DIM), np.float32))
    with pytest.raises(BadFileError):
        dg.load_latent(tmp_path / "wrong.npy", G)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(BadFileError):
        dg.load_latent(tmp_path / "junk.npy", G)


# -- the job pool ----------------------------------------------------------------------------------------


def test_a_drag_in_the_job_pool_takes_a_stop_sent_from_the_gui(pool, qtbot):
    session = dg.DragSession(ShiftGenerator(), fast(max_steps=100000, stop_distance=0.01))
    received = []
    job = pool.submit(session.run, [(10.0, 10.0)], [(20.0, 10.0)], name="drag", interactive=True)
    job.results.connect(received.extend)
    qtbot.waitUntil(lambda: len(received) >= 2, timeout=10000)
    assert job.send(dg.Stop())
    assert pool.wait_idle(10)
    assert job.value.reason == "stopped" and job.value.steps < 100000
    assert all(isinstance(item, dg.DragStep) for item in received)


# -- a tiny real StyleGAN2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_G():
    model = pytest.importorskip("playground.ml.stylegan2.model")
    torch.manual_seed(0)
    return model.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, channel_base=256,
                           channel_max=16, mapping_kwargs={"num_layers": 2})


def test_real_generator_defaults_and_initial_ws(real_G):
    assert dg.default_feature_block(real_G) == 32
    model = pytest.importorskip("playground.ml.stylegan2.model")
    big = model.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=256, img_channels=3, channel_base=1024,
                          channel_max=4, mapping_kwargs={"num_layers": 1})
    assert dg.default_feature_block(big) == 128
    ws = dg.initial_ws(real_G, 7, 0.7)
    z = torch.from_numpy(np.random.RandomState(7).randn(1, 16)).float()
    assert torch.equal(ws, real_G.mapping(z, None, truncation_psi=0.7))


@pytest.mark.parametrize("method", ["draggan", "freedrag"])
def test_real_generator_runs_steps_and_keeps_the_unoptimised_layers(real_G, method):
    session = dg.DragSession(real_G, dg.DragConfig(method=method, lr=0.01, max_steps=6, render_every=2))
    assert session.latent.shape == (1, 6, 16) and real_G.num_ws == 8
    flexible = np.zeros((32, 32), bool)
    flexible[8:24, 8:24] = True
    steps, result = run_all(session.run([(12.0, 12.0)], [(18.0, 14.0)], flexible))
    assert 1 <= len(steps) <= 6 and result.steps == len(steps)
    assert all(math.isfinite(s.loss) and s.motion_loss > 0 for s in steps)
    assert [s.image is not None for s in steps][:2] == [True, False]
    assert torch.equal(result.ws[:, 6:], session.w0[:, 6:].cpu()) and not torch.equal(result.ws, session.w0.cpu())
    assert np.array_equal(result.image, dg.render(real_G, result.ws))
    assert not any(p.requires_grad for p in real_G.parameters())  # only the latent is optimised


# -- features in windows around the handles ------------------------------------------------------------


def _noisy_generator(size: int):
    model = pytest.importorskip("playground.ml.stylegan2.model")
    torch.manual_seed(1)
    G = model.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=size, img_channels=3, channel_base=512,
                        channel_max=16, mapping_kwargs={"num_layers": 2}).eval().requires_grad_(False)
    for module in G.synthesis.modules():
        if hasattr(module, "noise_strength"):
            module.noise_strength.fill_(0.5)  # trained models have noise; a fresh one has none
    return G


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_windowed_synthesis_gives_the_numbers_of_the_whole_map(noise_mode, monkeypatch):
    G = _noisy_generator(64)
    ws = G.mapping(torch.randn(1, 16), None)
    for R in (64, 32, 8):
        _, whole = G.synthesis(ws, noise_mode=noise_mode, feature_block=R, stop_at_feature=True)
        boxes = [(0, 0, 5, 7), (R // 3, R // 4, R // 3 + R // 5 + 1, R // 4 + R // 6 + 1), (R - 6, R - 3, R, R)]
        crops = G.synthesis.feature_windows(ws, R, boxes, noise_mode=noise_mode)
        for (x0, y0, x1, y1), crop in zip(boxes, crops):
            torch.testing.assert_close(crop, whole[:, :, y0:y1, x0:x1], atol=1e-5, rtol=1e-5)
    # The halo is as small as it can be: one pixel fewer and the edges of the windows go wrong.
    model = pytest.importorskip("playground.ml.stylegan2.model")
    monkeypatch.setattr(model, "_WINDOW_HALO", 1)
    _, whole = G.synthesis(ws, noise_mode=noise_mode, feature_block=64, stop_at_feature=True)
    crop = G.synthesis.feature_windows(ws, 64, [(20, 20, 30, 30)], noise_mode=noise_mode)[0]
    assert (crop - whole[:, :, 20:30, 20:30]).abs().max() > 1e-3


@pytest.mark.parametrize("size,block", [(64, 64), (64, 32)])
def test_window_features_match_the_resized_map_and_carry_gradients(size, block):
    G = _noisy_generator(size)
    ws = G.mapping(torch.randn(1, 16), None).requires_grad_(True)
    centres = [(3.2, 60.0), (30.6, 21.4)]
    views = dg.window_features(G, ws, block, (size, size), centres, reach=7)
    _, feat = G.synthesis(ws, feature_block=block, stop_at_feature=True)
    full = dg.upsample_features(feat, (size, size))
    for (cx, cy), ((x0, y0), view) in zip(centres, views):
        h, w = view.shape[-2:]
        assert x0 == max(round(cx) - 7, 0) and y0 == max(round(cy) - 7, 0)
        assert x0 + w == min(round(cx) + 8, size) and y0 + h == min(round(cy) + 8, size)
        torch.testing.assert_close(view, full[:, :, y0:y0 + h, x0:x0 + w], atol=1e-5, rtol=1e-5)
    grad_window, = torch.autograd.grad(views[1][1].square().sum(), ws)
    (x0, y0), view = views[1]
    h, w = view.shape[-2:]
    grad_whole, = torch.autograd.grad(full[:, :, y0:y0 + h, x0:x0 + w].square().sum(), ws)
    torch.testing.assert_close(grad_window, grad_whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("block", [64, 32])
def test_a_windowed_drag_takes_the_steps_of_the_whole_network(block):
    """Same handles, losses and latent, step by step, with and without windows (and the windowed
    steps really skip the whole map)."""
    G = _noisy_generator(64)
    runs = {}
    for windowed in (False, True):
        cfg = dg.DragConfig(lr=0.01, max_steps=8, render_every=0, feature_block=block, windowed=windowed)
        session = dg.DragSession(G, cfg, ws0=dg.initial_ws(G, 3, 0.7))
        calls = []
        whole = G.synthesis.forward
        G.synthesis.forward = lambda *a, _calls=calls, _whole=whole, **k: (_calls.append(1), _whole(*a, **k))[1]
        try:
            steps, result = run_all(session.run([(20.0, 30.0), (50.0, 12.0)], [(27.0, 33.0), (44.0, 12.0)]))
        finally:
            del G.synthesis.forward
        runs[windowed] = (steps, result, len(calls))
    (s0, r0, calls0), (s1, r1, calls1) = runs[False], runs[True]
    assert len(s0) == len(s1) == 8
    for a, b in zip(s0, s1):
        assert a.handles == b.handles
        assert a.motion_loss == pytest.approx(b.motion_loss, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(r0.ws, r1.ws, atol=1e-5, rtol=1e-4)
    assert calls0 >= 8 and calls1 <= 1  # windowed: the whole network only for the final picture


def test_frame_interval_draws_pictures_by_the_clock(monkeypatch):
    G = _noisy_generator(32)
    clock = [0.0]
    monkeypatch.setattr(dg.time, "perf_counter", lambda: clock[0])
    session = dg.DragSession(G, dg.DragConfig(lr=0.01, max_steps=9, frame_interval=0.1, render_every=1))
    gen = session.run([(10.0, 10.0)], [(20.0, 10.0)])
    pictures = []
    step = next(gen)
    for _ in range(8):
        pictures.append(step.image is not None)
        clock[0] += 0.04  # 25 steps a second: a picture every third step
        step = gen.send(None)
    assert pictures == [False, False, False, True, False, False, True, False]


def test_freedrag_l_expected_is_calibrated_on_the_features():
    # F(x, y) = 0.5 x in every channel: a shift of d pixels at angle a changes it by 0.5 d |cos a|,
    # whose mean over directions is 0.5 d 2/pi; l is a quarter of that.
    xs = torch.arange(40, dtype=torch.float32)
    feat = (0.5 * xs).view(1, 1, 1, 40).expand(1, 3, 40, 40).contiguous()
    offsets = dg.fuzzy_offsets(1.0)
    value = dg.calibrated_l_expected(feat, offsets, d_max=3.0, points=400)
    assert value == pytest.approx(0.5 * 3.0 * (2 / math.pi) / 4, rel=0.1)
    assert dg.calibrated_l_expected(2 * feat, offsets, d_max=3.0, points=400) == pytest.approx(2 * value, rel=1e-5)
    session = dg.DragSession(ShiftGenerator(), fast(method="freedrag", l_expected=None, max_steps=40))
    steps, result = run_all(session.run([(10.0, 16.0)], [(14.0, 16.0)]))
    assert steps and result.distances[0] < 4.0
