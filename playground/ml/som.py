"""Self-organising map (Kohonen map), written for reading and for speed.

A SOM is a grid of ``rows x cols`` nodes. Every node v holds a weight vector W_v that
lives in the data space. Training repeats two moves:

1. find the best-matching unit (BMU) u of a sample x: the node whose weights are
   nearest to x (Euclidean distance);
2. pull the BMU and its grid neighbours towards x, the neighbours the less the
   further they are from u *on the grid*.

Online training does this one sample at a time (Kohonen's rule, step s, sample D(s))::

    W_v(s+1) = W_v(s) + theta(u, v, s) * alpha(s) * (D(s) - W_v(s))

where alpha(s) is the learning rate and theta(u, v, s) the neighbourhood weight, a
function of the grid distance d(u, v) and the radius sigma(s). Batch training takes a
whole epoch at once and moves every node to the neighbourhood-weighted mean of the
samples::

    W_v = sum_j h(bmu_j, v) x_j / sum_j h(bmu_j, v)

The grid
--------
Node ``(i, j)`` (row i, column j) has the flat index ``i * cols + j``. Its position on
the plane is ``(x, y) = (j, i)`` on a rectangular grid. On a hexagonal grid odd rows
are shifted right by half a step and rows are ``sqrt(3)/2`` apart, so every inner node
has six neighbours at distance exactly 1. A toroidal map wraps around both edges: the
grid distance is the shortest one over the wrap (a hexagonal torus needs an even number
of rows so that the row shifts line up across the seam).

Neighbourhoods (d = grid distance, sigma = radius)::

    gaussian      exp(-d^2 / (2 sigma^2))
    mexican_hat   (1 - d^2 / sigma^2) exp(-d^2 / (2 sigma^2))   (negative further out)
    bubble        1 if d <= sigma else 0
    triangle      max(0, 1 - d / sigma)
    halving       1 / 2^steps, steps = grid steps between the nodes (|di| + |dj| on a
                  rectangular grid, hex steps on a hexagonal one); sigma plays no part

Adjacency, used by the topographic error and the U-matrix: on a rectangular grid the
8 surrounding nodes, diagonals included (the convention of MiniSom, whose test is
"grid distance <= 1.42"); on a hexagonal grid the 6 nodes at distance 1. Pass
``diagonals=False`` for the 4 edge neighbours of a rectangular grid.

How it is computed
------------------
Weights are a float32 torch tensor ``(rows*cols, dim)`` on any device; BMU search,
metrics and batch training run there. Online training is a long chain of tiny
sequential steps, so it runs on the CPU in numpy, where a step costs microseconds (a
GPU kernel launch costs about as much as a whole step), and the result is copied back
to the device. It uses an exact "lazy" form of the update rule: within a block of K
steps every weight is kept as ``W_v = Q_v * (W_v(start) + sum_k B_kv x_k)``, so a step
touches only per-node numbers (length rows*cols) instead of the whole weight matrix,
and the weights are rebuilt with one matrix product per block. See :func:`_online_steps`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from scipy.linalg.blas import sgemv  # y <- a A x + b y, written over y: one call for P_k + B^T G_k

from ..errors import BadFileError, UserError
from ..progress import Progress
from .checkpoints import FORMAT, load_weights, save_weights, sidecar_path

TOPOLOGIES = ("rectangular", "hexagonal")
NEIGHBORHOODS = ("gaussian", "bubble", "mexican_hat", "triangle", "halving")
SCHEDULES = ("linear", "exponential", "inverse_time")
INITS = ("random", "samples", "pca")
MODES = ("online", "batch")
ORDERS = ("random", "sweep")

MIN_SIDE, MAX_SIDE = 1, 100  # a side of 1 makes a 1-D map (a chain); the map needs 2 nodes or more
SOM_KIND = "som"  # the "kind" in a saved map's JSON sidecar (see SOM.save)
HEX_ROW_SPACING = math.sqrt(3) / 2
METRIC_SAMPLE = 5000  # QE/TE of snapshots use at most this many samples (all of the built-in sets)
YIELD_EVERY_S = 0.1  # the training generator yields at least this often
# Steps per block of the lazy online update (see _online_steps). Longer blocks share the
# per-block matrix products among more steps, but every step's product with B grows with
# the block and the map. Measured best here: 48 on maps up to 2,500 nodes, 32 above.
ONLINE_BLOCK_SMALL_MAP, ONLINE_BLOCK_LARGE_MAP, LARGE_MAP_NODES = 48, 32, 2500


def online_block(n_nodes: int) -> int:
    return ONLINE_BLOCK_SMALL_MAP if n_nodes <= LARGE_MAP_NODES else ONLINE_BLOCK_LARGE_MAP


class SOMDivergedError(UserError, ArithmeticError):
    """Online training blew up: the weights grew past float32's range."""


# -----------------------------------------------------------------------------
# Configuration


@dataclass
class SOMConfig:
    """Everything that defines a map and its training. Defaults: a 10 x 10 batch map."""

    rows: int = 10
    cols: int = 10
    topology: str = "rectangular"  # 'rectangular' | 'hexagonal'
    toroidal: bool = False
    neighborhood: str = "gaussian"  # see NEIGHBORHOODS and the module docstring
    sigma0: float | None = None  # starting radius in grid steps; None: max(rows, cols) / 2
    sigma_end: float = 1.0  # radius at the end of training
    lr0: float = 0.5  # starting learning rate (online mode only)
    lr_end: float = 0.0  # learning rate at the end of training
    lr_schedule: str = "linear"  # 'linear' | 'exponential' | 'inverse_time'
    sigma_schedule: str = "linear"
    init: str = "pca"  # 'random' | 'samples' | 'pca'
    mode: str = "batch"  # 'online' | 'batch'
    order: str = "random"  # online sampling: a fresh permutation per epoch, or 'sweep' in order
    epochs: int = 10
    seed: int = 0
    snapshots: int = 50  # about this many snapshots per run (batch: at most one per epoch); 0: the final one only

    @property
    def start_sigma(self) -> float:
        return float(self.sigma0) if self.sigma0 is not None else max(self.rows, self.cols) / 2

    def validate(self) -> list[str]:
        """Readable sentences, one per problem; an empty list means the config is good."""
        bad: list[str] = []

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not (is_int(v) and MIN_SIDE <= v <= MAX_SIDE):
                bad.append(f"The number of {name} must be a whole number from {MIN_SIDE} to {MAX_SIDE} (got {v!r}).")
        if not bad and self.rows * self.cols < 2:
            bad.append("The map needs at least 2 nodes.")
        choices = {"topology": TOPOLOGIES, "neighborhood": NEIGHBORHOODS, "lr_schedule": SCHEDULES,
                   "sigma_schedule": SCHEDULES, "init": INITS, "mode": MODES, "order": ORDERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad.append(f"Unknown {name.replace('_', ' ')} {getattr(self, name)!r}; "
                           f"choose one of {', '.join(allowed)}.")
        if not isinstance(self.toroidal, bool):
            bad.append("'toroidal' must be true or false.")
        if self.sigma0 is not None and not (is_num(self.sigma0) and 0 < self.sigma0 <= 1000):
            bad.append(f"The starting radius must be above 0 and at most 1000 (got {self.sigma0!r}).")
        if not (is_num(self.sigma_end) and 0 < self.sigma_end <= 1000):
            bad.append(f"The final radius must be above 0 and at most 1000 (got {self.sigma_end!r}).")
        if not (is_num(self.lr0) and 0 < self.lr0 <= 1):
            bad.append(f"The starting learning rate must be above 0 and at most 1 (got {self.lr0!r}).")
        if not (is_num(self.lr_end) and 0 <= self.lr_end <= 1):
            bad.append(f"The final learning rate must be from 0 to 1 (got {self.lr_end!r}).")
        if self.lr_schedule in ("exponential", "inverse_time") and is_num(self.lr_end) and self.lr_end <= 0:
            bad.append(f"The {self.lr_schedule.replace('_', '-')} learning-rate schedule needs a final "
                       "learning rate above 0 (for example 0.01).")
        if not (is_int(self.epochs) and 1 <= self.epochs <= 10000):
            bad.append(f"The number of epochs must be a whole number from 1 to 10000 (got {self.epochs!r}).")
        if not (is_int(self.seed) and 0 <= self.seed <= 2**31 - 1):
            bad.append(f"The seed must be a whole number from 0 to 2147483647 (got {self.seed!r}).")
        if not (is_int(self.snapshots) and 0 <= self.snapshots <= 10000):
            bad.append(f"The number of snapshots must be a whole number from 0 to 10000 (got {self.snapshots!r}).")
        if self.topology == "hexagonal" and self.toroidal and is_int(self.rows) and self.rows % 2:
            bad.append("A hexagonal toroidal map needs an even number of rows, so that the "
                       "shifted rows line up across the wrap.")
        if self.mode == "batch" and self.neighborhood == "mexican_hat":
            bad.append("The Mexican-hat neighbourhood has negative weights, so batch training "
                       "(a weighted mean) is not defined for it; use online training.")
        return bad

    def check(self) -> None:
        """Raise ValueError listing every problem, if there is any."""
        problems = self.validate()
        if problems:
            raise ValueError(" ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SOMConfig:
        """Build from a dict, ignoring keys this version does not know (values are checked by :meth:`validate`)."""
        if not isinstance(d, dict):
            raise TypeError(f"a map's config must be an object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def schedule(kind: str, start: float, end: float, progress) -> np.ndarray:
    """A decaying parameter (learning rate or radius) at ``progress`` in [0, 1].

    linear:       a = start + (end - start) * p        (end 0 gives start * (1 - s/T))
    exponential:  a = start * (end / start) ** p        (needs end > 0)
    inverse_time: a = start / (1 + p * (start / end - 1))  (a = start / (1 + s/tau), needs end > 0)
    All three start at ``start`` (p = 0) and reach ``end`` at p = 1.
    """
    p = np.asarray(progress, dtype=np.float64)
    if kind == "linear":
        return start + (end - start) * p
    if kind == "exponential":
        return start * (end / start) ** p
    if kind == "inverse_time":
        return start / (1.0 + p * (start / end - 1.0))
    raise ValueError(f"Unknown schedule {kind!r}")


# -----------------------------------------------------------------------------
# Neighbourhood functions (work on numpy arrays and on torch tensors alike)


def neighborhood_weights(kind: str, d2, steps, sigma: float):
    """theta for squared grid distances ``d2`` (and grid ``steps``, used by 'halving')."""
    if kind == "gaussian":
        return (d2 * (-0.5 / sigma**2)).exp() if isinstance(d2, torch.Tensor) else np.exp(d2 * (-0.5 / sigma**2))
    if kind == "mexican_hat":
        g = neighborhood_weights("gaussian", d2, steps, sigma)
        return (1.0 - d2 / sigma**2) * g
    if kind == "bubble":  # (a hair of slack, so that a radius of 1 keeps the nodes at distance 1)
        return (d2 <= sigma**2 + 1e-9) * 1.0
    if kind == "triangle":
        return (1.0 - d2**0.5 / sigma).clip(0)
    if kind == "halving":
        return 0.5**steps
    raise ValueError(f"Unknown neighbourhood {kind!r}")


# -----------------------------------------------------------------------------
# Grid geometry


class Grid:
    """Node positions, grid distances and adjacency of a rows x cols map.

    Distances from one node to all others depend only on the offset (di, dj) between
    them (and, on a hexagonal grid, on whether the first node sits on an odd row), so
    they are kept as small offset tables of shape (2*rows - 1, 2*cols - 1), one per row
    parity, instead of an (N, N) matrix (10^8 numbers for a 100 x 100 map). The row of
    distances from node (i, j) to every node is the window
    ``table[rows-1-i : 2*rows-1-i, cols-1-j : 2*cols-1-j]``.
    """

    def __init__(self, rows: int, cols: int, topology: str = "rectangular", toroidal: bool = False):
        self.rows, self.cols = rows, cols
        self.hexagonal = topology == "hexagonal"
        self.toroidal = toroidal
        self.n_nodes = rows * cols
        self.row_of, self.col_of = np.divmod(np.arange(self.n_nodes), cols)
        # Positions on the plane, (N, 2) as (x, y).
        x = self.col_of + (0.5 * (self.row_of % 2) if self.hexagonal else 0.0)
        y = self.row_of * (HEX_ROW_SPACING if self.hexagonal else 1.0)
        self.xy = np.stack([x, y], axis=1).astype(np.float64)

        di = np.arange(-(rows - 1), rows)[:, None]  # row offset, down the table
        dj = np.arange(-(cols - 1), cols)[None, :]  # column offset, across
        parities = (0, 1) if self.hexagonal else (0,)
        self.d2_table = np.stack([self._offset_d2(di, dj, p) for p in parities])
        self.steps_table = np.stack([self._offset_steps(di, dj, p) for p in parities])
        self.neighbour_table = self._build_neighbours(diagonals=True)
        self.edge_neighbour_table = self._build_neighbours(diagonals=False)

    # -- distances by offset ------------------------------------------------------
    def _wrap(self, d, period):
        """Shortest signed offset on a circle of length ``period`` (identity if not toroidal)."""
        return d - period * np.round(d / period) if self.toroidal else d

    def half_x_offset(self, dj, parity_from, parity_to):
        """Twice the x offset (an integer) from a node on a row of parity ``parity_from``."""
        shift = (parity_to - parity_from) if self.hexagonal else 0
        return self._wrap(2 * dj + shift, 2 * self.cols)

    def _offset_d2(self, di, dj, parity: int) -> np.ndarray:
        """Squared plane distance for row offset di, column offset dj, from a row of ``parity``.

        Computed as integers (4 d^2 = (2 dx)^2 + 3 di^2 on a hex grid) so that distances
        such as 1 come out exact.
        """
        di_w = self._wrap(di, self.rows)
        two_dx = self.half_x_offset(dj, parity, (parity + di) % 2)
        if self.hexagonal:
            return (two_dx**2 + 3 * di_w**2) / 4.0
        return (two_dx**2) / 4.0 + di_w**2.0

    def _offset_steps(self, di, dj, parity: int) -> np.ndarray:
        """Grid steps (hops between adjacent nodes, diagonals excluded) for an offset."""
        if not self.hexagonal:
            return np.abs(self._wrap(dj, self.cols)) + np.abs(self._wrap(di, self.rows)) + 0.0
        # Hex steps via cube coordinates of "odd rows shifted right" layout. On a torus,
        # take the shortest over the wrapped copies of the target node.
        best = None
        shifts_i = (-self.rows, 0, self.rows) if self.toroidal else (0,)
        shifts_j = (-self.cols, 0, self.cols) if self.toroidal else (0,)
        for si in shifts_i:
            for sj in shifts_j:
                r0, r1 = parity, parity + di + si  # rows of the two nodes (r0 stands for any row of that parity)
                q0 = 0 - (r0 - (r0 & 1)) // 2
                q1 = dj + sj - (r1 - (r1 & 1)) // 2
                dq, dr = q1 - q0, r1 - r0
                steps = np.maximum(np.maximum(np.abs(dq), np.abs(dr)), np.abs(dq + dr))
                best = steps if best is None else np.minimum(best, steps)
        return best + 0.0

    def window(self, table: np.ndarray, node: int) -> np.ndarray:
        """(rows, cols) view of an offset table: the value from ``node`` to every node."""
        i, j = int(self.row_of[node]), int(self.col_of[node])
        p = i % 2 if self.hexagonal else 0
        r, c = self.rows, self.cols
        return table[p, r - 1 - i : 2 * r - 1 - i, c - 1 - j : 2 * c - 1 - j]

    def offset_index(self, nodes) -> np.ndarray:
        """Gather indices into a flattened offset table for the rows ``nodes`` x all nodes."""
        r, c = self.rows, self.cols
        width = 2 * c - 1
        nodes = np.asarray(nodes)
        i, j = nodes // c, nodes % c
        p = i % 2 if self.hexagonal else 0 * i
        base = p * (2 * r - 1) * width + (r - 1 - i) * width + (c - 1 - j)
        rel = self.row_of * width + self.col_of
        return base[:, None] + rel[None, :]

    def d2_from(self, node: int) -> np.ndarray:
        """Squared grid distance from ``node`` to every node, flat (N,)."""
        return self.window(self.d2_table, node).ravel()

    def steps_from(self, node: int) -> np.ndarray:
        return self.window(self.steps_table, node).ravel()

    def distance(self, a, b) -> np.ndarray:
        """Grid (plane) distance between node indices ``a`` and ``b`` (broadcasting)."""
        a, b = np.asarray(a), np.asarray(b)
        ia, ja, ib, jb = a // self.cols, a % self.cols, b // self.cols, b % self.cols
        pa = ia % 2 if self.hexagonal else 0
        d2 = self._offset_d2(ib - ia, jb - ja, pa)
        return np.sqrt(d2)

    # -- adjacency -------------------------------------------------------------
    def _build_neighbours(self, diagonals: bool) -> np.ndarray:
        """(N, 8) node indices of each node's neighbours (ascending), padded with -1.

        Candidates are the 8 surrounding (row, column) cells; a candidate is a neighbour
        if its plane distance is 1 (or sqrt(2) for rectangular diagonals). On a hex grid
        that keeps exactly the 6 nodes around. On a small torus the same node can turn
        up twice (from both sides); it is kept once.
        """
        limit = 2.0 if (diagonals and not self.hexagonal) else 1.0  # on the squared distance
        v = np.arange(self.n_nodes)
        candidates = []
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if di == 0 and dj == 0:
                    continue
                i, j = self.row_of + di, self.col_of + dj
                inside = (i >= 0) & (i < self.rows) & (j >= 0) & (j < self.cols)
                if self.toroidal:
                    i, j, inside = i % self.rows, j % self.cols, np.ones_like(inside)
                w = np.where(inside, i * self.cols + j, v)
                ok = inside & (w != v) & (self.distance(v, w) ** 2 <= limit + 1e-9)
                candidates.append(np.where(ok, w, -1))
        c = np.sort(np.stack(candidates, axis=1), axis=1)
        repeat = np.zeros_like(c, dtype=bool)
        repeat[:, 1:] = c[:, 1:] == c[:, :-1]
        c[repeat] = -1
        c = np.sort(np.where(c < 0, self.n_nodes, c), axis=1)  # padding to the end
        return np.where(c == self.n_nodes, -1, c)

    def neighbours(self, node: int, diagonals: bool = True) -> list[int]:
        table = self.neighbour_table if diagonals else self.edge_neighbour_table
        return [int(w) for w in table[node] if w >= 0]


# -----------------------------------------------------------------------------
# The map


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"Data must be a 2-D array (samples x features), got shape {x.shape}.")
    return x


class SOM:
    """A self-organising map: a config, a grid and a weight tensor (rows*cols, dim)."""

    def __init__(self, config: SOMConfig, dim: int, device: str | torch.device = "cpu",
                 weights: torch.Tensor | np.ndarray | None = None):
        config.check()
        self.config = config
        self.dim = int(dim)
        self.device = torch.device(device)
        self.grid = Grid(config.rows, config.cols, config.topology, config.toroidal)
        self.meta: dict = {}
        n = self.grid.n_nodes
        if weights is None:
            self.weights = torch.zeros(n, self.dim, dtype=torch.float32, device=self.device)
        else:
            self.set_weights(weights)

    @property
    def shape(self) -> tuple[int, int]:
        return self.config.rows, self.config.cols

    @property
    def n_nodes(self) -> int:
        return self.grid.n_nodes

    def set_weights(self, weights) -> None:
        """Replace the weights: anything of rows*cols*dim numbers, e.g. (N, dim) or (rows, cols, dim)."""
        w = weights if isinstance(weights, torch.Tensor) else torch.from_numpy(np.array(weights, dtype=np.float32))
        if w.numel() != self.n_nodes * self.dim:
            raise ValueError(f"Weights of shape {tuple(w.shape)} do not fit a {self.config.rows} x "
                             f"{self.config.cols} map of {self.dim} features.")
        self.weights = w.reshape(self.n_nodes, self.dim).to(device=self.device, dtype=torch.float32).clone()

    def weights_grid(self) -> np.ndarray:
        """Weights as float32 numpy (rows, cols, dim)."""
        return self.weights.detach().cpu().numpy().reshape(self.config.rows, self.config.cols, self.dim).copy()

    def _tensor(self, x) -> torch.Tensor:
        """Samples as a float32 (n, dim) tensor on the map's device; one 1-D sample is allowed."""
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
        t = t.to(device=self.device, dtype=torch.float32)
        if t.ndim == 1:
            t = t[None, :] if self.dim > 1 else t[:, None]
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"Data of shape {tuple(t.shape)} does not fit a map of {self.dim} features.")
        return t

    # -- initialisation -------------------------------------------------------
    def init_weights(self, data, method: str | None = None, seed: int | None = None) -> None:
        """Set the starting weights by ``method`` (default: the config's ``init``).

        random:  uniform in the data's bounding box, feature by feature.
        samples: randomly chosen data samples (with replacement if the map has more nodes).
        pca:     an evenly spaced grid on the plane of the first two principal components,
                 centred on the data mean. The longer side of the map follows PC1, and
                 each axis spans +-sqrt(3) standard deviations of the data along its
                 component (the spread of evenly spaced points with that variance), so
                 the map starts at the data's own scale. Deterministic.
        """
        method = method or self.config.init
        rng = np.random.default_rng(self.config.seed if seed is None else seed)
        x = _as_numpy(data).astype(np.float64)
        n, d = x.shape
        if d != self.dim:
            raise ValueError(f"Data has {d} features, the map expects {self.dim}.")
        if method == "random":
            lo, hi = x.min(axis=0), x.max(axis=0)
            w = lo + rng.random((self.n_nodes, d)) * (hi - lo)
        elif method == "samples":
            w = x[rng.choice(n, size=self.n_nodes, replace=self.n_nodes > n)]
        elif method == "pca":
            w = self._pca_weights(x)
        else:
            raise ValueError(f"Unknown init {method!r}")
        self.weights = torch.from_numpy(w.astype(np.float32)).to(self.device)

    def _pca_weights(self, x: np.ndarray) -> np.ndarray:
        n, d = x.shape
        mean = x.mean(axis=0)
        # Principal axes: eigenvectors of the covariance matrix (dim x dim), largest first;
        # the sign of each axis is fixed (largest entry positive) so the result never
        # depends on the solver.
        cov = np.cov(x, rowvar=False).reshape(d, d) if n > 1 else np.zeros((d, d))
        with _single_thread_blas()():
            eigvals, eigvecs = np.linalg.eigh(cov)
        top = np.argsort(eigvals)[::-1][:2]
        axes = np.zeros((2, d))
        stds = np.zeros(2)
        axes[: len(top)] = eigvecs[:, top].T
        stds[: len(top)] = np.sqrt(np.clip(eigvals[top], 0, None))
        for a in range(2):
            if np.abs(axes[a]).max() > 0:
                axes[a] *= np.sign(axes[a][np.argmax(np.abs(axes[a]))])
        # Plane coordinates of the nodes, scaled to [-1, 1] along each map side (0 on a side of one node).
        xy = self.grid.xy
        extent = np.ptp(xy, axis=0)
        u = np.where(extent > 0, (xy - xy.min(axis=0)) / np.where(extent > 0, extent, 1.0) * 2 - 1, 0.0)
        along_cols, along_rows = u[:, 0], u[:, 1]
        first, second = (along_cols, along_rows) if self.config.cols >= self.config.rows else (along_rows, along_cols)
        spread = math.sqrt(3.0)
        return mean + spread * (first[:, None] * stds[0] * axes[0] + second[:, None] * stds[1] * axes[1])

    # -- matching ---------------------------------------------------------------
    def _chunk_rows(self) -> int:
        return max(1, (1 << 22) // max(self.n_nodes, 1))  # about 16 MB of float32 distances

    def _half_scores(self, xb: torch.Tensor, w: torch.Tensor, wn: torch.Tensor) -> torch.Tensor:
        """||w||^2/2 - x.w: the squared distance minus the constant ||x||^2, halved."""
        return wn[None, :] - xb @ w.T

    def bmu(self, x, k: int = 1) -> np.ndarray:
        """Index of the best-matching node of every sample, (n,) int64; with k > 1 the k best, (n, k)."""
        t = self._tensor(x)
        w = self.weights
        wn = 0.5 * (w * w).sum(1)
        out = []
        step = self._chunk_rows()
        for a in range(0, t.shape[0], step):
            sc = self._half_scores(t[a : a + step], w, wn)
            idx = sc.argmin(1, keepdim=True) if k == 1 else sc.topk(k, dim=1, largest=False).indices
            out.append(idx)
        idx = torch.cat(out).cpu().numpy().astype(np.int64) if out else np.zeros((0, k), np.int64)
        return idx[:, 0] if k == 1 else idx

    def quantization_error(self, x) -> float:
        """Mean Euclidean distance from each sample to its BMU's weights."""
        return self.quality(x)[0]

    def topographic_error(self, x, diagonals: bool = True) -> float:
        """Share of samples whose best and second-best nodes are not adjacent.

        Adjacent: the 8 surrounding nodes on a rectangular grid (diagonals included, as in
        MiniSom) or the 6 on a hexagonal one; ``diagonals=False`` uses 4 on a rectangular grid.
        """
        return self.quality(x, diagonals)[1]

    def quality(self, x, diagonals: bool = True) -> tuple[float, float]:
        """(quantization error, topographic error) from one search for the two best nodes."""
        return self.quality_and_bmus(x, diagonals)[:2]

    def quality_and_bmus(self, x, diagonals: bool = True) -> tuple[float, float, np.ndarray]:
        """:meth:`quality`, and the BMU of every sample found on the way."""
        t = self._tensor(x)
        if t.shape[0] == 0:
            return float("nan"), float("nan"), np.zeros(0, np.int64)
        best2 = self.bmu(t, k=2)
        bmu = torch.from_numpy(best2[:, 0]).to(self.device)
        qe = float((t - self.weights[bmu]).norm(dim=1).mean())
        table = self.grid.neighbour_table if diagonals else self.grid.edge_neighbour_table
        adjacent = (table[best2[:, 0]] == best2[:, 1:2]).any(axis=1)
        return qe, float(1.0 - adjacent.mean()), best2[:, 0].copy()

    # -- maps for display -------------------------------------------------------
    def u_matrix(self, diagonals: bool = True) -> np.ndarray:
        """(rows, cols): each node's mean weight distance to its adjacent nodes (not normalised)."""
        table = torch.from_numpy(self.grid.neighbour_table if diagonals else self.grid.edge_neighbour_table)
        table = table.to(self.device)
        w = self.weights
        total = torch.zeros(self.n_nodes, device=self.device)
        for slot in range(table.shape[1]):  # one neighbour slot at a time: (N, dim) at most
            other = table[:, slot]
            valid = other >= 0
            total += (w - w[other.clamp(min=0)]).norm(dim=1) * valid
        count = (table >= 0).sum(1).clamp(min=1)
        return (total / count).cpu().numpy().reshape(self.shape)

    def hits(self, x=None, bmus=None) -> np.ndarray:
        """(rows, cols) int64: how many samples each node is the BMU of (give ``x``, or their ``bmus``)."""
        b = self.bmu(x) if bmus is None else np.asarray(bmus, np.int64)
        return np.bincount(b, minlength=self.n_nodes).reshape(self.shape)

    def label_map(self, x, labels, bmus=None) -> np.ndarray:
        """(rows, cols) int64: the most common label among each node's samples, -1 where none.

        Ties go to the smallest label. Labels must be non-negative integers. ``bmus``, when
        known, spares the search (``x`` is then not used).
        """
        labels = np.asarray(labels).astype(np.int64).ravel()
        b = self.bmu(x) if bmus is None else np.asarray(bmus, np.int64)
        if len(labels) != len(b):
            raise ValueError(f"{len(labels)} labels for {len(b)} samples.")
        if len(b) == 0:
            return np.full(self.shape, -1, dtype=np.int64)
        if labels.min() < 0:
            raise ValueError("Labels must be non-negative integers.")
        counts = np.zeros((self.n_nodes, int(labels.max()) + 1), dtype=np.int64)
        np.add.at(counts, (b, labels), 1)
        out = counts.argmax(axis=1)
        out[counts.sum(axis=1) == 0] = -1
        return out.reshape(self.shape)

    def component_planes(self) -> np.ndarray:
        """(dim, rows, cols): one map per feature, the weights' value of that feature."""
        return self.weights.detach().cpu().numpy().T.reshape(self.dim, *self.shape).copy()

    def neighbours(self, node, diagonals: bool = True) -> list[int]:
        """Flat indices of the nodes adjacent to ``node`` (an index or a (row, col) pair)."""
        if isinstance(node, tuple):
            node = node[0] * self.config.cols + node[1]
        return self.grid.neighbours(int(node), diagonals)

    # -- saving -----------------------------------------------------------------
    @staticmethod
    def sidecar_path(path) -> Path:
        return sidecar_path(path)

    def save(self, path) -> None:
        """Write the weights to ``path`` (.safetensors) and the config to a JSON next to it.

        Through :func:`~playground.ml.checkpoints.save_weights`: both files are written
        atomically and the JSON lists the weights' shape, so a mismatched pair is refused.
        """
        save_weights(path, {"weights": self.weights}, {"kind": SOM_KIND, "dim": self.dim,
                                                       "config": self.config.to_dict(), "meta": self.meta})

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> SOM:
        """Read a map written by :meth:`save` (safetensors and JSON only, never pickle).

        Also reads maps from before :mod:`~playground.ml.checkpoints` (sidecar format
        "playground-som"). Everything in the JSON is checked before it is used, so a
        damaged or doctored file gives one :class:`BadFileError` sentence.
        """
        path = Path(path)
        tensors, side = load_weights(path)
        side_name = sidecar_path(path).name
        if not side:
            raise BadFileError(f"{path.name} has no {side_name} next to it describing the map.")
        is_old = side.get("format") == "playground-som"
        if not (is_old or (side.get("format") == FORMAT and side.get("kind") == SOM_KIND)):
            raise BadFileError(f"{side_name} does not describe a saved SOM.")
        dim, meta = side.get("dim"), side.get("meta")
        if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
            raise BadFileError(f"{side_name} is damaged: 'dim' must be a whole number of 1 or more (got {dim!r}).")
        if meta is not None and not isinstance(meta, dict):
            raise BadFileError(f"{side_name} is damaged: 'meta' must be an object (got {type(meta).__name__}).")
        try:
            config = SOMConfig.from_dict(side.get("config"))
        except (TypeError, ValueError) as exc:
            raise BadFileError(f"{side_name} is damaged: {exc}") from None
        problems = config.validate()
        if problems:
            raise BadFileError(f"{side_name} is damaged: {problems[0]}")
        if "weights" not in tensors:
            raise BadFileError(f"{path.name} holds no 'weights' tensor.")
        w = tensors["weights"]
        n_nodes = config.rows * config.cols
        if tuple(w.shape) != (n_nodes, dim):
            raise BadFileError(f"{path.name} does not fit its {side_name}: the weights are "
                               f"{'x'.join(map(str, w.shape))} but a {config.rows} x {config.cols} map of "
                               f"{dim} features needs {n_nodes}x{dim}.")
        if not w.is_floating_point():
            raise BadFileError(f"{path.name}: the weights are {w.dtype}, not floating point numbers.")
        som = cls(config, dim, device=device, weights=w)
        som.meta = dict(meta or {})
        return som


# -----------------------------------------------------------------------------
# Training


@dataclass
class SOMSnapshot:
    """The map at one moment of training (weights copied, safe to keep)."""

    step: int  # online: samples seen so far; batch: epochs done
    epoch: int  # epochs completed (a fraction of one shows as the lower whole number)
    fraction: float  # of the whole run
    weights: np.ndarray  # float32 (rows, cols, dim)
    qe: float  # quantization error on (a subsample of) the data
    te: float  # topographic error, same samples
    sigma: float = float("nan")  # radius at this moment
    lr: float = float("nan")  # learning rate at this moment (online)
    bmus: np.ndarray | None = None  # every sample's BMU, when QE/TE were measured on all of them


def _validate_data(data) -> np.ndarray:
    x = _as_numpy(data)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError("The data set is empty.")
    if not np.isfinite(x).all():
        raise ValueError("The data contain NaN or infinite values.")
    return x


def train(data, config: SOMConfig, should_stop: Callable[[], bool] | None = None,
          device: str | torch.device = "cpu", initial_weights=None
          ) -> Generator[Progress | SOMSnapshot, None, SOM]:
    """Train a map on ``data`` (n, dim); a generator of Progress and SOMSnapshot.

    It yields at least every ~0.1 s of work, so closing it (``gen.close()``) cancels
    promptly. ``should_stop()`` returning True ends training early, with a final
    snapshot. The trained :class:`SOM` is the generator's return value. Snapshots: about
    ``config.snapshots`` per run (in batch mode at most one per epoch, so one per epoch
    by default), and always one at the end; their QE and TE are measured on up to
    METRIC_SAMPLE samples. ``initial_weights`` (rows*cols, dim) replaces the config's init.
    """
    config.check()
    x = _validate_data(data)
    som = SOM(config, x.shape[1], device=device)
    yield Progress(0.0, "Initialising the map")
    if initial_weights is not None:
        som.set_weights(initial_weights)
    else:
        som.init_weights(x)
    rng = np.random.default_rng(config.seed)
    probe = x if len(x) <= METRIC_SAMPLE else x[np.sort(rng.choice(len(x), METRIC_SAMPLE, replace=False))]
    probe_t = som._tensor(probe)
    stop = should_stop or (lambda: False)
    run = _train_batch(som, x, config, stop) if config.mode == "batch" else _train_online(som, x, config, rng, stop)
    while True:
        try:
            event = next(run)
        except StopIteration:
            break
        if isinstance(event, dict):  # a snapshot request: the run has updated som.weights
            qe, te, bmus = som.quality_and_bmus(probe_t)
            yield SOMSnapshot(weights=som.weights_grid(), qe=qe, te=te, bmus=bmus if probe is x else None, **event)
        else:
            yield event
    return som


def fit(data, config: SOMConfig, device: str | torch.device = "cpu", initial_weights=None) -> SOM:
    """Train to the end and return the map (drains :func:`train`)."""
    gen = train(data, config, device=device, initial_weights=initial_weights)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


# -- batch mode ---------------------------------------------------------------------


def _train_batch(som: SOM, x: np.ndarray, config: SOMConfig, stop) -> Generator:
    """Kohonen's batch map: per epoch, every node becomes the h-weighted mean of the data.

    sum_j h(bmu_j, v) x_j only depends on which node each sample hit, so it is computed
    as H^T S with S the per-node sums of samples and H the neighbourhood rows of the
    nodes that were hit (in chunks, so memory stays small on large maps). Nodes that
    get no weight at all (possible with 'bubble' and 'triangle') keep their weights.
    The learning rate plays no part in batch mode. Epoch e uses the radius at its start,
    sigma(e / epochs), as online training would.
    """
    grid, dev = som.grid, som.device
    t = som._tensor(x)
    d2_flat = torch.from_numpy(grid.d2_table.ravel()).to(dev, torch.float32)
    steps_flat = torch.from_numpy(grid.steps_table.ravel()).to(dev, torch.float32)
    epochs = config.epochs
    chunk = max(1, (1 << 21) // som.n_nodes)  # hit nodes per H block: about 8 MB of float32
    every = max(1, math.ceil(epochs / config.snapshots)) if config.snapshots > 0 else epochs + 1
    last_yield = time.perf_counter()
    for e in range(epochs):
        p = e / epochs  # as online: each epoch takes the values at its start
        sigma = float(schedule(config.sigma_schedule, config.start_sigma, config.sigma_end, p))
        b = torch.from_numpy(som.bmu(t)).to(dev)
        counts = torch.bincount(b, minlength=som.n_nodes).to(torch.float32)
        sums = torch.zeros(som.n_nodes, som.dim, device=dev).index_add_(0, b, t)
        hit = torch.nonzero(counts).ravel()
        hit_np = hit.cpu().numpy()
        num = torch.zeros_like(sums)
        den = torch.zeros(som.n_nodes, device=dev)
        for a in range(0, len(hit), chunk):
            u = hit[a : a + chunk]
            idx = torch.from_numpy(grid.offset_index(hit_np[a : a + chunk])).to(dev)
            halving = config.neighborhood == "halving"
            h = neighborhood_weights(config.neighborhood, None if halving else d2_flat[idx],
                                     steps_flat[idx] if halving else None, sigma)  # (len(u), N)
            num += h.T @ sums[u]
            den += h.T @ counts[u]
            if time.perf_counter() - last_yield > YIELD_EVERY_S:  # a long epoch: stay cancellable
                yield Progress((e + a / len(hit)) / epochs, f"Batch epoch {e + 1} / {epochs}")
                last_yield = time.perf_counter()
        moved = den > 1e-12
        som.weights[moved] = num[moved] / den[moved, None]
        stopping = e + 1 < epochs and stop()
        if (e + 1) % every == 0 or e + 1 == epochs or stopping:
            yield {"step": e + 1, "epoch": e + 1, "fraction": (e + 1) / epochs, "sigma": sigma, "lr": float("nan")}
        yield Progress((e + 1) / epochs, f"Batch epoch {e + 1} / {epochs}")
        last_yield = time.perf_counter()
        if stopping:
            return


# -- online mode --------------------------------------------------------------------


class _SampleOrder:
    """Which sample each online step uses: a fresh permutation per epoch, or a sweep."""

    def __init__(self, n: int, order: str, rng: np.random.Generator):
        self.n, self.order, self.rng = n, order, rng
        self._epoch, self._perm = -1, None

    def take(self, start: int, stop: int) -> np.ndarray:
        """Sample indices for global steps [start, stop), requested in increasing order."""
        out = []
        s = start
        while s < stop:
            epoch, offset = divmod(s, self.n)
            if epoch != self._epoch:
                self._epoch = epoch
                self._perm = self.rng.permutation(self.n) if self.order == "random" else np.arange(self.n)
            end = min(stop, (epoch + 1) * self.n)
            out.append(self._perm[offset : offset + end - s])
            s = end
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _train_online(som: SOM, x: np.ndarray, config: SOMConfig, rng: np.random.Generator, stop) -> Generator:
    """Kohonen's online rule over epochs * n steps, in time-boxed chunks (numpy, CPU).

    Chunks and snapshots fall on block boundaries (multiples of the block length), so
    the result does not depend on how the work was cut up: the same seed gives the same
    map, whatever the machine's speed or the number of snapshots.
    """
    n = len(x)
    total = config.epochs * n
    order = _SampleOrder(n, config.order, rng)
    w = som.weights.detach().cpu().numpy()
    block = online_block(som.n_nodes)

    def whole_blocks(steps: float) -> int:
        return max(block, int(steps) // block * block)

    every = whole_blocks(math.ceil(total / config.snapshots)) if config.snapshots > 0 else total
    next_snap = min(every, total)
    chunk = whole_blocks(128)  # grows to ~YIELD_EVERY_S / 2 of work once the speed is known
    s = 0
    limiter = _single_thread_blas()
    while s < total:
        end = min(s + chunk, next_snap)
        steps = np.arange(s, end)
        alpha = schedule(config.lr_schedule, config.lr0, config.lr_end, steps / total)
        sigma = schedule(config.sigma_schedule, config.start_sigma, config.sigma_end, steps / total)
        t0 = time.perf_counter()
        with limiter(), np.errstate(over="ignore", invalid="ignore"):  # divergence is checked for
            w = _online_steps(w, x, order.take(s, end), alpha, sigma, som.grid, config.neighborhood, block)
        elapsed = time.perf_counter() - t0
        chunk = whole_blocks(min((end - s) * (0.5 * YIELD_EVERY_S) / max(elapsed, 1e-6), 1 << 20))
        s = end
        stopping = s < total and stop()
        epoch_now = min(s // n + 1, config.epochs)
        yield Progress(s / total, f"Online step {s:,} / {total:,} (epoch {epoch_now} / {config.epochs})")
        if s == next_snap or s == total or stopping:
            som.weights = torch.from_numpy(w.copy()).to(som.device)
            yield {"step": s, "epoch": s // n, "fraction": s / total,
                   "sigma": float(sigma[-1]), "lr": float(alpha[-1])}
            next_snap = min(next_snap + every, total)
        if stopping:
            return


@functools.cache
def _single_thread_blas():
    """A context manager factory that keeps numpy's BLAS on one thread.

    The online blocks multiply small matrices (32 x dim x nodes), for which BLAS threads
    only add hand-over cost, and which slow down many times over when the cores are busy
    (the GUI, another job). threadpoolctl comes with scikit-learn; without it, no limit.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        from contextlib import nullcontext

        return nullcontext
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=1, user_api="blas")


def _online_steps(w: np.ndarray, x: np.ndarray, order: np.ndarray, alpha: np.ndarray,
                  sigma: np.ndarray, grid: Grid, kind: str, block: int = 32) -> np.ndarray:
    """Apply the online rule for the samples ``x[order]`` to weights ``w`` (N, dim); return the new weights.

    Exact, but lazy. Write one step as W_v <- (1 - h_v) W_v + h_v x with h_v = alpha *
    theta(u, v). Over a block of steps k = 0, 1, ... every node stays of the form

        W_v = Q_v * (W0_v + sum_k B_kv x_k),   Q_v = prod_k (1 - h_kv),   B_kv = h_kv / Q_v(after step k)

    so one step needs only numbers per node (length N), never the (N, dim) weights:

        x_k . W_v   = Q_v m_v,   m_v = x_k . W0_v + sum_{j<k} B_jv (x_k . x_j)
        ||W_v||^2/2 = Q_v S_v,   S_v = Q_v ||W0_v + sum_j B_jv x_j||^2 / 2.

    The BMU minimises ||x - W_v||^2/2 - ||x||^2/2 = Q_v (S_v - m_v) = Q_v D_v, and the
    step turns S into (1 - h) S + h (m + B_k ||x_k||^2/2) = S + h (B_k ||x_k||^2/2 - D).
    The products x_k . W0_v (P) and x_k . x_j (G) take one matrix product per block, and
    so does rebuilding the weights at its end. A step costs about a dozen numpy calls on
    length-N vectors, whatever the data's dimension.

    All of it runs in float32, the weights' own precision. Everything per node is scaled
    alike by 1/Q, so the BMU scores Q D come out as accurate as a float32 distance
    computation (about 1e-7 of ||x||^2), as in batch mode and the metrics. B, S and m
    grow like ||x||^2 / Q, so a block ends before prod(1 - alpha), a lower bound of Q,
    falls below a floor that keeps them far from float32's limit (3e38); it also ends
    before a learning rate of ~1, where 1 - h can be 0 (that step is done directly).

    The gaussian is separable, theta = exp(-c dy^2) exp(-c dx^2), so its h is an outer
    product of two short profiles (per block: one exp over the row offsets, one over the
    column offsets). On a hex grid, rows of the other parity than the BMU's sit half a
    step to the side, so they take a second column profile, of half-step offsets.
    """
    n_nodes, rows, cols = grid.n_nodes, grid.rows, grid.cols
    gaussian, hexagonal = kind == "gaussian", grid.hexagonal
    if gaussian:
        di = np.arange(-(rows - 1), rows)  # row offsets; index rows-1+di
        dy2 = grid._wrap(di, rows) ** 2.0 * (0.75 if hexagonal else 1.0)  # (sqrt(3)/2)^2 = 0.75 exactly
        dj = np.arange(-(cols - 1), cols)  # column offsets; index cols-1+dj
        dx2_same = grid._wrap(dj, cols) ** 2.0
        dj_half = np.arange(-cols, cols) + 0.5  # half-step offsets t+0.5; index cols+t
        dx2_other = grid._wrap(dj_half, cols) ** 2.0
        # float32 throughout (see above); numpy also does float32 exps several times faster
        dy2, dx2_same, dx2_other = (a.astype(np.float32) for a in (dy2, dx2_same, dx2_other))
        neg_c = (-0.5 / sigma**2).astype(np.float32)
        alpha32 = alpha.astype(np.float32)

    def profiles(offsets2, c, scale=1.0):
        """exp(-c offset^2) * scale for each step of the block (rows) and each offset."""
        return np.exp(offsets2 * c) * scale

    w = np.ascontiguousarray(w, dtype=np.float32)
    f32 = np.float32
    q = np.empty(n_nodes, f32)
    s_half = 0.5 * np.einsum("ij,ij->i", w, w)  # S = ||W||^2/2 while Q = 1
    b = np.empty((block, n_nodes), f32)
    b_rows = list(b)
    b_firsts = [b[:k].T for k in range(block)]  # B_0..B_{k-1} as (N, k) columns, made once
    d = np.empty(n_nodes, f32)
    tmp = np.empty(n_nodes, f32)
    one_minus_h = np.empty(n_nodes, f32)
    h_grid = np.empty((rows, cols), f32)
    h = h_grid.reshape(-1)
    dot, multiply, subtract, divide = np.dot, np.multiply, np.subtract, np.divide
    n_steps = len(order)
    s = 0
    while s < n_steps:
        if alpha[s] > 1.0 - 1e-6:  # the lazy form divides by 1 - h: do this step directly
            xs = x[order[s]]
            u = int(np.einsum("ij,ij->i", w - xs, w - xs).argmin())
            theta = neighborhood_weights(kind, grid.d2_from(u), grid.steps_from(u), sigma[s])
            w = (w + (alpha[s] * theta)[:, None] * (xs - w)).astype(np.float32)
            s_half = 0.5 * np.einsum("ij,ij->i", w, w)
            s += 1
            continue
        block_end = (s // block + 1) * block  # blocks stay on multiples of ``block``
        ahead = alpha[s:block_end]
        xb = x[order[s:block_end]]  # (K, dim)
        biggest = max(1.0, 2.0 * float(s_half.max()), float(np.einsum("ij,ij->i", xb, xb).max()))
        q_floor = max(1e-25, 1e-35 * biggest)
        fine = (ahead <= 1.0 - 1e-6) & (np.cumprod(1.0 - ahead) > q_floor)
        end = s + (len(ahead) if fine.all() else max(1, int(np.argmin(fine))))
        xb = xb[: end - s]
        p_rows = list(xb @ w.T)  # (K, N): x_k . W0_v
        g = xb @ xb.T  # (K, K): x_k . x_j
        g_rows = list(g)
        x_half = (0.5 * np.diag(g)).tolist()  # ||x_k||^2 / 2
        if gaussian:  # per step: a column of row factors (alpha folded in) and a row of column factors
            c = neg_c[s:end, None]
            ey_cols = list(profiles(dy2, c, alpha32[s:end, None])[:, :, None])  # (2 rows - 1, 1) each
            ex_rows = list(profiles(dx2_same, c)[:, None, :])  # (1, 2 cols - 1) each
            ex_other_rows = list(profiles(dx2_other, c)[:, None, :]) if hexagonal else None
        q.fill(1.0)
        for k in range(end - s):
            # m = x_k . (W0 + sum_{j<k} B_j x_j) = P_k + B^T G_k, written over P_k;
            # the BMU minimises Q D with D = S - m
            m = sgemv(1.0, b_firsts[k], g_rows[k][:k], 1.0, p_rows[k], overwrite_y=1) if k else p_rows[0]
            subtract(s_half, m, d)
            multiply(q, d, tmp)
            iu, ju = divmod(int(tmp.argmin()), cols)
            # h = alpha * theta(u, .) on the (rows, cols) grid
            if gaussian:
                ey = ey_cols[k][rows - 1 - iu : 2 * rows - 1 - iu]
                ex = ex_rows[k][:, cols - 1 - ju : 2 * cols - 1 - ju]
                if hexagonal:
                    pu = iu % 2
                    start = cols - ju - pu
                    multiply(ey[pu::2], ex, out=h_grid[pu::2])
                    multiply(ey[1 - pu :: 2], ex_other_rows[k][:, start : start + cols], out=h_grid[1 - pu :: 2])
                else:
                    dot(ey, ex, h_grid)  # the outer product, via BLAS (the quickest way here)
            else:
                u = iu * cols + ju
                theta = neighborhood_weights(kind, grid.window(grid.d2_table, u),
                                             grid.window(grid.steps_table, u), sigma[s + k])
                multiply(theta, alpha[s + k], out=h_grid, casting="unsafe")
            # Q <- Q (1 - h);  B_k = h / Q;  S <- S + h (B_k ||x_k||^2 / 2 - D)
            subtract(1.0, h, one_minus_h)
            q *= one_minus_h
            bk = b_rows[k]
            divide(h, q, bk)
            multiply(bk, x_half[k], tmp)
            tmp -= d
            tmp *= h
            s_half += tmp
        # Rebuild the weights; S becomes Q S = ||W||^2 / 2 for the next block (Q = 1 again).
        rebuilt = b[: end - s].T @ xb
        rebuilt += w
        rebuilt *= q[:, None]
        w = rebuilt
        s_half *= q
        if not np.isfinite(s_half).all():
            raise SOMDivergedError(
                "Training diverged: the weights grew without bound. The Mexican hat pushes the "
                "nodes in its negative ring away from each sample; with a learning rate this "
                "high they fly apart. Lower the learning rate (say 0.02) or pick another neighbourhood.")
        s = end
    return w
