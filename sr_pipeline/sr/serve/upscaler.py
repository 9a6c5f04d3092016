"""Upscaling with a student (1 network evaluation) or a teacher (its T-step deterministic sampler).

Images are processed in overlapping LR tiles, batched, and blended with feathered weights. Tiles
are taken one tile row at a time: a float accumulator holds only the HR rows of the current tile
row, and rows that no later tile touches are normalised and handed on (to a uint8/uint16 array,
or straight into a streaming PNG). Peak memory is therefore the input image plus a band of
``tile * scale`` HR rows plus one batch of tiles, whatever the image height; ``Upscaler.plan``
estimates it and lowers the batch (or refuses) to stay within a budget (4 GiB by default). Rows
with NaN or infinities are never handed on (:class:`NonFiniteOutput`).

The blending weights are outer products of 1-D feathers on a full grid of tile positions, so their
sum is the outer product of two 1-D sums: no HR-sized weight map is needed.

The sampler starts from x_T = up(y) + kappa sqrt(eta_T) * noise_scale * eps. By default a student
runs at the noise scale it was distilled at (``colearn.start_noise_scale`` in its training.json: a
student distilled from the prior's mean breaks down from eps ~ N(0, I)), a teacher at 0, the
prior's mean: fidelity first, as inspection needs (on the demo's calibration pairs the 15-step
teacher gained 2.3 dB PSNR-Y over eps ~ N(0, I), which trades PSNR for hallucinated texture). With
noise_scale > 0, eps is drawn per fixed HR block from the seed and the block's position, so
overlapping tiles see the same noise and the result is deterministic for a seed whatever the tiling.

With ``self_ensemble`` n > 1 (2, 4 or 8), every tile is also run flipped and rotated (the first n of
the square's eight symmetries), each output is turned back and the n are averaged: n times the
network's time for a result less dependent on the network's orientation biases (EDSR's "x8"
self-ensemble). The start noise is transformed with the tile, so a seed gives the same result.

On a GPU the network runs under bf16 autocast in channels-last layout, optionally compiled.

Writing files (and the ``sr-pipeline upscale`` command) is :mod:`sr_pipeline.serving.upscale`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.models.checkpoints import LoadedModel, load_sr_model
from sr_pipeline.sr.images.decode import SourceImage
from sr_pipeline.sr.images.png_stream import TEXT_PREFIX
from sr_pipeline.sr.images.tensors import LUMA, upsample
from sr_pipeline.sr.serve.tiles import TileSettings

NOISE_BLOCK = 64  # HR pixels per side of one independently seeded noise block
DEFAULT_MEMORY_BUDGET = 4 * 2**30
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)
# (horizontal flip, quarter turns) of a square tile, in the order self-ensemble takes them
_SYMMETRIES = [(False, 0), (True, 0), (False, 1), (True, 1), (False, 2), (True, 2), (False, 3), (True, 3)]

# Memory model constants (bytes), calibrated against measured peak RSS on the CPU with margin
# (sr_pipeline_tests/sr/serve/test_infer_memory.py checks estimate >= measured).
_IO_COPIES = 12  # HR-tile-sized float tensors alive around one network call (up(y), noise, x_t, ...)
_ENSEMBLE_COPIES = 3  # with self-ensemble: the turned LR and noise, and the running sum
_NET_WORKING = 6  # activation tensors per UNet level besides its skips (resnet temporaries, concats)
_BAND_COPIES = 3  # accumulator, normalised rows, the caller's conversion temporaries
_OVERHEAD = 32 * 2**20  # allocator slack


class NonFiniteOutput(ValueError):
    """The network's output holds NaN or infinities (a start noise too large, a broken checkpoint)."""


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak bytes of one image, by part, for the batch chosen within the budget."""

    batch: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        mib = {k: f"{v / 2**20:.0f}" for k, v in self.parts.items()}
        parts = ", ".join(f"{k} {v}" for k, v in mib.items())
        return f"~{self.total / 2**20:.0f} MiB (batch {self.batch}; {parts} MiB)"


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def _feather(n: int, overlap: int) -> np.ndarray:
    """1-D blending weights: linear ramps over the overlap, flat elsewhere, never zero."""
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = ramp
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _weight_sum(length: int, starts: list[int], feather: np.ndarray) -> np.ndarray:
    total = np.zeros(length, dtype=np.float32)
    for s in starts:
        total[s:s + len(feather)] += feather
    return total


def block_noise(seed: int, y0: int, x0: int, h: int, w: int) -> torch.Tensor:
    """Standard normal noise for the HR window [y0:y0+h, x0:x0+w], stitched from seeded blocks."""
    out = torch.empty(3, h, w)
    b = NOISE_BLOCK
    for by in range(y0 // b, (y0 + h - 1) // b + 1):
        for bx in range(x0 // b, (x0 + w - 1) // b + 1):
            g = torch.Generator().manual_seed(hash((seed, by, bx)) & 0x7FFF_FFFF_FFFF_FFFF)
            block = torch.randn(3, b, b, generator=g)
            ys, xs = max(y0, by * b), max(x0, bx * b)
            ye, xe = min(y0 + h, (by + 1) * b), min(x0 + w, (bx + 1) * b)
            out[:, ys - y0:ye - y0, xs - x0:xe - x0] = block[:, ys - by * b:ye - by * b, xs - bx * b:xe - bx * b]
    return out


def _transform(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """Flip (B, C, H, W) left-right, then turn it ``turns`` quarter turns."""
    return torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))


def _untransform(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """The inverse of :func:`_transform`."""
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _max_value(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"expected uint8 or uint16 pixels, got {dtype}")


def _as_hwc(lr: np.ndarray) -> np.ndarray:
    if lr.ndim == 2:
        lr = lr[:, :, None]
    if lr.ndim != 3 or lr.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxWx3 (or grey HxW / HxWx1) image, got shape {lr.shape}")
    _max_value(lr.dtype)
    return lr


def quantise(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float rows in [-1, 1] -> uint8/uint16, rounded and clipped (modifies ``rows``)."""
    half = _max_value(np.dtype(dtype)) / 2.0
    rows *= half
    rows += half
    np.rint(rows, out=rows)
    np.clip(rows, 0, 2 * half, out=rows)
    return rows.astype(dtype)


def to_grey(rows: np.ndarray) -> np.ndarray:
    """(n, W, 3) float -> (n, W, 1) luma."""
    return (rows @ LUMA)[:, :, None]


def upscale_alpha_rows(alpha: np.ndarray, scale: int, r0: int, r1: int) -> np.ndarray:
    """HR rows [r0, r1) of the bicubic-upscaled alpha (HxW uint8/uint16), as float in [0, 1].

    Taken from a slab of LR rows with a margin wider than the bicubic kernel, so every band
    equals the same rows of the whole image upscaled at once.
    """
    m = _max_value(alpha.dtype)
    lo, hi = max(0, r0 // scale - 3), min(alpha.shape[0], (r1 - 1) // scale + 4)
    slab = torch.from_numpy(np.ascontiguousarray(alpha[lo:hi])).float().div_(m)[None, None]
    up = F.interpolate(slab, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0]
    return up[r0 - lo * scale:r1 - lo * scale].clamp_(0, 1).numpy()


class Upscaler:
    """A loaded checkpoint plus how to run it; ``__call__`` maps LR HxWx3 uint8/uint16 to HR."""

    def __init__(self, model: LoadedModel, steps: int = 1, seed: int = 0, tiles: TileSettings = TileSettings(),
                 device: str = "cpu", noise_scale: float | None = None, *, compile: bool = False,
                 memory_budget: int | None = DEFAULT_MEMORY_BUDGET, self_ensemble: int = 1,
                 reject_nonfinite: bool = True):
        if model.schedule is None:
            raise ValueError(f"{model.path} has no diffusion schedule")
        if not 1 <= steps <= model.schedule.num_steps:
            raise ValueError(f"--steps must be in 1..{model.schedule.num_steps} for {model.path}")
        if noise_scale is None:  # the model's own: a student is served at the start noise it was distilled at
            noise_scale = model.served_noise_scale
        if noise_scale < 0:
            raise ValueError("noise_scale must be >= 0")
        if self_ensemble not in SELF_ENSEMBLE_SIZES:
            raise ValueError(f"self_ensemble must be one of {', '.join(map(str, SELF_ENSEMBLE_SIZES))}")
        self.self_ensemble = self_ensemble
        # Outputs with NaN or infinities raise NonFiniteOutput; a judge that counts them itself (the
        # promotion gate's output watch) turns this off to score the model's invalid outputs as they are.
        self.reject_nonfinite = reject_nonfinite
        self.model, self.steps, self.seed, self.tiles, self.device = model, steps, seed, tiles, device
        self.noise_scale = noise_scale
        self.memory_budget = memory_budget
        self.scale = int(model.net.config.scale)
        multiple = int(model.net.lr_multiple)
        if tiles.tile % multiple:
            raise ValueError(f"tile size {tiles.tile} must be a multiple of {multiple} LR pixels for this model")
        self.on_gpu = device.startswith("cuda")
        self.net = model.net
        if self.on_gpu:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.compiled = compile
        if compile:
            self.net = torch.compile(self.net, dynamic=False)

    @classmethod
    def from_dir(cls, model_dir: Path, device: str = "cpu", **kwargs) -> "Upscaler":
        return cls(load_sr_model(model_dir, device), device=device, **kwargs)

    @property
    def version(self) -> str:
        return self.model.version

    # --- planning -----------------------------------------------------------------------------
    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        """(tile, overlap) for an image: an image smaller than a tile gets one tile just big enough
        (rounded up to the network's multiple) rather than heavy reflect padding, which changes what
        the network sees near the borders."""
        t, o = self.tiles.tile, self.tiles.overlap
        m = int(self.model.net.lr_multiple)
        fit = -(-max(height, width) // m) * m
        if fit < t:
            return fit, min(o, fit // 4)
        return t, o

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        t, _ = self._geometry(height, width)
        return max(height, t), max(width, t)

    def tile_count(self, height: int, width: int) -> int:
        hp, wp = self._padded(height, width)
        t, o = self._geometry(height, width)
        return len(_starts(hp, t, o)) * len(_starts(wp, t, o))

    def _net_bytes_per_tile(self, t: int) -> int:
        cfg = self.model.net.config
        level_bytes = sum(c * (t >> i) ** 2 * 4 for i, c in enumerate(cfg.block_out_channels))
        # Attention runs through scaled_dot_product_attention, whose CPU and GPU kernels do not
        # materialise the N x N scores, so it costs activations like any other layer.
        acts = (cfg.layers_per_block + 1 + _NET_WORKING) * level_bytes
        copies = _IO_COPIES + (_ENSEMBLE_COPIES if self.self_ensemble > 1 else 0)
        io = copies * 3 * (t * self.scale) ** 2 * 4
        return acts + io

    def plan(self, height: int, width: int, channels: int = 3, itemsize: int = 1, *,
             held: int = 0) -> MemoryPlan:
        """The largest batch (up to the configured one) whose estimated peak fits the budget.

        ``held`` counts bytes the caller keeps meanwhile (a whole output array, an alpha channel).
        Raises ``MemoryError`` when even one tile per call does not fit.
        """
        s, (t, _) = self.scale, self._geometry(height, width)
        hp, wp = self._padded(height, width)
        padded = hp * wp * channels * itemsize if (hp, wp) != (height, width) else 0
        fixed = {
            "input": height * width * channels * itemsize + padded,
            "band": _BAND_COPIES * t * s * wp * s * 3 * 4,
            "held": held,
            "overhead": _OVERHEAD,
        }
        per_tile = self._net_bytes_per_tile(t)
        batch = self.tiles.batch
        if self.memory_budget is not None and sum(fixed.values()) + batch * per_tile > self.memory_budget:
            # the largest batch that fits, by division (not a step at a time: --batch may be huge)
            batch = int(min(batch - 1, max(1, (self.memory_budget - sum(fixed.values())) // per_tile)))
            batch = max(1, batch)
        plan = MemoryPlan(batch, {**fixed, "tiles": batch * per_tile})
        if self.memory_budget is not None and plan.total > self.memory_budget:
            raise MemoryError(f"a {width}x{height} image needs {plan.describe()}, over the budget of "
                              f"{self.memory_budget / 2**20:.0f} MiB: lower --tile or raise --memory-budget")
        return plan

    # --- running ------------------------------------------------------------------------------
    @torch.inference_mode()
    def run_tiles(self, lr_tiles: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One network batch: LR tiles (B, 3, t, t) in [-1, 1] on the device -> HR tiles in [-1, 1]
        (the mean over the tiles' first ``self_ensemble`` symmetries)."""
        if noise is None:
            noise = torch.zeros(*lr_tiles.shape[:2], *(n * self.scale for n in lr_tiles.shape[2:]),
                                device=lr_tiles.device)
        if self.self_ensemble == 1:
            return self._sample(lr_tiles, noise)
        out = None
        for flip, turns in _SYMMETRIES[:self.self_ensemble]:
            one = _untransform(self._sample(_transform(lr_tiles, flip, turns), _transform(noise, flip, turns)),
                               flip, turns)
            out = one if out is None else out.add_(one)
        return out.div_(self.self_ensemble)

    def _sample(self, lr_tiles: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        up_y = upsample(lr_tiles, self.scale)
        if self.on_gpu:
            up_y = up_y.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_gpu):
            out = self.model.schedule.sample(self.net, up_y, noise, num_inference_steps=self.steps)
        return out.float().clamp(-1, 1)

    def _tiles(self, src: np.ndarray, boxes: list[tuple[int, int]], maxval: int,
               t: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        lr = torch.from_numpy(np.stack([src[y:y + t, x:x + t] for y, x in boxes]).astype(np.float32))
        lr = lr.permute(0, 3, 1, 2).mul_(2.0 / maxval).sub_(1.0).expand(-1, 3, -1, -1)
        if self.noise_scale > 0:
            noise = torch.stack([block_noise(self.seed, y * s, x * s, t * s, t * s) for y, x in boxes])
            noise *= self.noise_scale
        else:
            noise = torch.zeros(len(boxes), 3, t * s, t * s, device=self.device)
        return lr.to(self.device), noise.to(self.device)

    def iter_rows(self, lr: np.ndarray, progress: Callable[[int], None] | None = None, *,
                  held: int = 0) -> Iterator[np.ndarray]:
        """Yield the HR image top to bottom as float32 row bands (n, W*scale, 3) in [-1, 1].

        ``lr`` is HxWx3 or grey (HxW, HxWx1), uint8 or uint16; ``progress(k)`` is called after
        every network call with the number of tiles it processed; ``held`` as in :meth:`plan`.
        """
        lr = _as_hwc(lr)
        maxval = _max_value(lr.dtype)
        plan = self.plan(lr.shape[0], lr.shape[1], lr.shape[2], lr.dtype.itemsize, held=held)
        H, W = lr.shape[:2]
        s, (t, o) = self.scale, self._geometry(H, W)
        ph, pw = max(0, t - H), max(0, t - W)
        src = lr
        if ph or pw:  # images smaller than a tile are padded up to one tile and cropped back
            src = np.pad(lr, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(H, W) > max(ph, pw) else "edge")
        Hp, Wp = src.shape[:2]
        T, Wo = t * s, W * s
        feather = _feather(T, o * s)
        weight = np.outer(feather, feather)[..., None]
        ys, xs = _starts(Hp, t, o), _starts(Wp, t, o)
        wy = _weight_sum(Hp * s, [y * s for y in ys], feather)
        wx = _weight_sum(Wp * s, [x * s for x in xs], feather)[:Wo, None]
        acc = np.zeros((T, Wp * s, 3), dtype=np.float32)
        top = 0  # HR row held in acc[0]

        def finish(end: int) -> Iterator[np.ndarray]:
            end_out = min(end, H * s)
            if end_out > top:
                rows = acc[:end_out - top, :Wo] / (wy[top:end_out, None, None] * wx[None])
                if self.reject_nonfinite and not np.isfinite(rows.sum(dtype=np.float64)):  # one NaN/inf shows in the sum
                    raise NonFiniteOutput(f"the network gave NaN or infinite values (HR rows {top}..{end_out - 1})")
                yield rows

        for y in ys:
            Y = y * s
            yield from finish(Y)
            shift = Y - top
            if shift:
                acc[:T - shift] = acc[shift:]
                acc[T - shift:] = 0
                top = Y
            row_boxes = [(y, x) for x in xs]
            for i in range(0, len(row_boxes), plan.batch):
                chunk = row_boxes[i:i + plan.batch]
                run_boxes = chunk + [chunk[-1]] * (plan.batch - len(chunk)) if self.compiled else chunk
                out = self.run_tiles(*self._tiles(src, run_boxes, maxval, t))[:len(chunk)]
                out = out.permute(0, 2, 3, 1).cpu().numpy()
                for (_, x), tile_out in zip(chunk, out):
                    acc[:, x * s:(x + t) * s] += tile_out * weight
                if progress is not None:
                    progress(len(chunk))
        yield from finish(top + T)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """The whole HR image, HxWx3 of the input's dtype (grey input comes back replicated)."""
        lr = _as_hwc(lr)
        H, W = lr.shape[:2]
        held = H * self.scale * W * self.scale * 3 * lr.dtype.itemsize
        self.plan(H, W, lr.shape[2], lr.dtype.itemsize, held=held)  # refuse before allocating the output
        out = np.empty((H * self.scale, W * self.scale, 3), dtype=lr.dtype)
        r = 0
        for rows in self.iter_rows(lr, held=held):
            out[r:r + len(rows)] = quantise(rows, lr.dtype)
            r += len(rows)
        return out


# ---------------------------------------------------------------- images with modes


def iter_output_rows(upscaler: Upscaler, src: SourceImage, *, drop_alpha: bool = False,
                     progress: Callable[[int], None] | None = None, held: int = 0) -> Iterator[np.ndarray]:
    """HR row bands in the source's mode (grey stays grey; alpha bicubic-upscaled unless dropped).

    ``held``: bytes the caller keeps meanwhile (for the memory plan), besides the alpha channel.
    """
    dtype = src.colour.dtype
    r = 0
    held += 0 if src.alpha is None else src.alpha.nbytes
    for rows in upscaler.iter_rows(src.colour, progress, held=held):
        n = len(rows)
        parts = [quantise(to_grey(rows) if src.grey else rows, dtype)]
        if src.alpha is not None and not drop_alpha:
            a = upscale_alpha_rows(src.alpha, upscaler.scale, r, r + n)
            parts.append(quantise(a[:, :, None] * 2.0 - 1.0, dtype))
        r += n
        yield parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def provenance_text(upscaler: Upscaler, src: SourceImage, source_name: str, *, drop_alpha: bool = False,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """PNG text metadata: the model that made the image and the source it came from."""
    notes = list(src.notes)
    if src.alpha is not None:
        notes.append("alpha_dropped" if drop_alpha else "alpha_bicubic")
    text = {
        "Software": "sr_pipeline",
        f"{TEXT_PREFIX}model_version": upscaler.version,
        f"{TEXT_PREFIX}model_kind": upscaler.model.kind,
        f"{TEXT_PREFIX}steps": str(upscaler.steps),
        f"{TEXT_PREFIX}scale": str(upscaler.scale),
        f"{TEXT_PREFIX}source_sha256": src.sha256,
        f"{TEXT_PREFIX}source_name": source_name,
        f"{TEXT_PREFIX}created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if upscaler.noise_scale > 0:
        text[f"{TEXT_PREFIX}noise"] = f"scale={upscaler.noise_scale:g} seed={upscaler.seed}"
    if upscaler.self_ensemble > 1:
        text[f"{TEXT_PREFIX}self_ensemble"] = str(upscaler.self_ensemble)
    if notes:
        text[f"{TEXT_PREFIX}notes"] = ",".join(notes)
    return {**text, **(extra or {})}
