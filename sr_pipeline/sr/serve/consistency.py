"""Is a restored image consistent with what the camera recorded?

An output ``x_hat`` of an LR image ``y`` is consistent when the camera, applied to it, gives back
what the camera recorded: ``camera(x_hat) ~ y``. The camera is the learned downsampler G of the
image's field camera at eps' = 0, or bicubic-down when no G exists (the model-free second opinion).
From the LR residual ``r = camera(x_hat) - y`` (8-bit levels) come:

- ``psnr_y``: the consistency PSNR-Y in dB (peak 255) of camera(x_hat) against y;
- the **map**: ``|r_Y|`` smoothed by a 3x3 binomial (so single-pixel sensor noise does not light
  it up), divided by the camera's pixel threshold: a value above 1 is an LR pixel that the output
  contradicts;
- ``flagged_share``: the share of LR pixels whose map value is above 1;
- ``peak``: the largest smoothed residual, in levels (a small invented defect lives here: a
  planted spot moves a handful of LR pixels far, which a share would average away);
- ``local_peak`` / ``border_peak``: the largest smoothed residual relative to what the input's
  local structure explains, ``|r| / (a + b * structure)`` with ``structure`` the 3x3 local maximum
  of the recorded LR's Y gradient magnitude (levels per pixel): a model's own residual sits on
  edges, an invented defect on flat ground stands out. ``a`` and ``b`` are fitted on the
  calibration outputs; the outermost LR pixel ring (``border_peak``) gets its own limit, because a
  convolutional camera model (G, zero-padded) disagrees most at the image edge;
- ``colour_shift``: the mean residual per channel (and ``intensity_shift`` over channels): a
  colour cast or brightness change the output added.

:class:`ConsistencyPass` computes all of it while the upscaler streams its rows out: HR row bands
go in (as written, so the audit of the saved PNG finds the same figures), and only LR-sized arrays
are kept, never the HR image. Bicubic-down is computed band by band with a halo of LR rows, so the
result equals a whole-image pass. G normalises over the whole image (GroupNorm), so for it the
pass keeps G's LR-sized inputs (bicubic-down and the pixel-unshuffled HR) and runs G once at the
end.

:class:`Thresholds` turn the figures into a verdict (``ok`` / ``check``); they are fitted per
camera on the plant's calibration pairs by :func:`fit_thresholds`. :func:`enforce_consistency`
projects an output back towards its input (iterative back-projection through the camera model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.models.downsampler import LearnedDownsampler, load_downsampler
from sr_pipeline.sr.images.tensors import downsample, upsample
from sr_pipeline.sr.judge.wording import COLOUR_DECIMALS, PEAK_DECIMALS, PSNR_DECIMALS, SHARE_DECIMALS, fixed, percent

Y_WEIGHTS = torch.tensor([65.481, 128.553, 24.966]) / 255.0  # Y of YCbCr per 0-255 RGB level, as metrics.rgb_to_y
BICUBIC_HALO = 3  # LR rows beyond a band that antialiased bicubic-down reads (its support is 2 LR pixels)
MAP_FILE_SUFFIX = "_consistency.png"
VERDICTS = ("ok", "check")
# What a person could see. However consistent the calibration outputs were, a residual below these
# never makes an output `check`: the demo's 8 calibration outputs agreed with their inputs to 2
# levels, and limits fitted on them alone flagged 10 of its 36 field images for 3-level differences.
VISIBLE_LEVELS = 4.0  # floor of the pixel threshold; the least smoothed residual the local limit counts
VISIBLE_PEAK = 8.0  # floor of the peak limit (levels)
VISIBLE_PSNR = 40.0  # ceiling of the consistency PSNR-Y limit (dB)
VISIBLE_COLOUR = 2.0  # floor of the colour limit (levels)
PSNR_MARGIN_DB = 1.0  # how far below its limit a consistency PSNR-Y alone, without flagged pixels, makes `check`
LOCAL_FIELDS = ("local_floor", "local_slope", "local_peak", "border_peak")


# ---------------------------------------------------------------- camera models


class Camera:
    """A camera model: HR in [-1, 1] -> the LR the camera would record, in [-1, 1]."""

    name = "camera"
    whole_image = False  # True: needs the whole image at once (global normalisation)

    def __init__(self, scale: int):
        self.scale = int(scale)

    def __call__(self, x_hr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BicubicCamera(Camera):
    """Antialiased bicubic downsampling: the model-free camera (no blur, no noise, no colour)."""

    name = "bicubic"

    @torch.inference_mode()
    def __call__(self, x_hr: torch.Tensor) -> torch.Tensor:
        return downsample(x_hr, self.scale)


class LearnedCamera(Camera):
    """The learned downsampler G of a field camera at eps' = 0 (deterministic)."""

    whole_image = True

    def __init__(self, model: LearnedDownsampler, name: str):
        super().__init__(model.config.scale)
        self.model, self.name = model, name

    @classmethod
    def from_dir(cls, model_dir: Path, device: str = "cpu") -> "LearnedCamera":
        return cls(load_downsampler(model_dir, device), f"G {Path(model_dir).name}")

    @torch.inference_mode()
    def __call__(self, x_hr: torch.Tensor) -> torch.Tensor:
        return self.model(x_hr)

    @torch.inference_mode()
    def from_parts(self, base: torch.Tensor, unshuffled: torch.Tensor) -> torch.Tensor:
        return self.model.from_parts(base, unshuffled)


# ---------------------------------------------------------------- thresholds and verdicts


@dataclass(frozen=True)
class Thresholds:
    """When an output needs a person's look. Levels are 8-bit (0-255) steps of Y or of a channel.

    ``pixel``: smoothed |residual| above which an LR pixel is flagged (the map's 1.0);
    ``peak``: the largest smoothed |residual| an output may carry; ``share``: the flagged share of
    LR pixels an output may carry; ``psnr``: the lowest consistency PSNR-Y (dB); ``colour``: the
    largest |mean shift| of a channel. The local limit: ``local_floor`` (levels) and ``local_slope``
    (levels per level of local gradient) give the residual the input's structure explains;
    ``local_peak`` / ``border_peak`` are the largest ratios to it an output may carry inside / on
    the outermost LR pixel ring (``border_peak`` 0: ``local_peak`` there too); ``local_peak`` 0 (the
    default, as in files fitted before them) switches the local limit off.
    """

    pixel: float = 10.0
    peak: float = 20.0
    share: float = 0.01
    psnr: float = 28.0
    colour: float = 4.0
    local_floor: float = 0.0
    local_slope: float = 0.0
    local_peak: float = 0.0
    border_peak: float = 0.0
    camera: str = "default"
    source: str = "built-in defaults (no calibration pairs)"
    fit: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("pixel", "peak", "share", "psnr", "colour") + LOCAL_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"consistency threshold {name} must be a finite number, got {value!r}")
        if self.pixel <= 0 or self.peak <= 0 or self.colour <= 0:
            raise ValueError(f"consistency thresholds pixel, peak and colour must be > 0 levels, got "
                             f"pixel={self.pixel:g}, peak={self.peak:g}, colour={self.colour:g}")
        if not 0 <= self.share < 1:
            raise ValueError(f"consistency threshold share must be in [0, 1), got {self.share:g}")
        if self.psnr <= 0:
            raise ValueError(f"consistency threshold psnr must be > 0 dB, got {self.psnr:g}")
        if min(getattr(self, name) for name in LOCAL_FIELDS) < 0:
            raise ValueError("consistency thresholds " + ", ".join(LOCAL_FIELDS) + " must be >= 0, got "
                             + ", ".join(f"{n}={getattr(self, n):g}" for n in LOCAL_FIELDS))
        if self.local and self.local_floor <= 0:
            raise ValueError(f"consistency threshold local_floor must be > 0 levels when local_peak is set, "
                             f"got {self.local_floor:g}")

    @property
    def local(self) -> bool:
        """Whether the local limit is on (fitted)."""
        return self.local_peak > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        if not isinstance(data, dict):
            raise ValueError(f"consistency thresholds must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown consistency threshold setting(s): {', '.join(unknown)}")
        return cls(**data)


THRESHOLDS_FILE = "consistency.json"


BICUBIC_MODEL = "bicubic"
LEARNED_MODEL = "learned"


def camera_model_kind(name: str | None) -> str:
    """``bicubic`` or ``learned`` (a G) for a camera model's name (``Camera.name``, a fit's
    ``camera_model``)."""
    return BICUBIC_MODEL if name == BicubicCamera.name else LEARNED_MODEL


def save_thresholds(path: Path, by_camera: dict[str, Thresholds], write,
                    other_models: dict[str, dict[str, Thresholds]] | None = None) -> None:
    """``write(path, bytes)`` publishes the per-camera thresholds (an atomic writer). ``by_camera`` is
    fitted for the model's own camera model; ``other_models`` (by kind, e.g. ``bicubic``) for others."""
    body: dict = {"cameras": {cam: t.to_dict() for cam, t in sorted(by_camera.items())}}
    if other_models:
        body["camera_models"] = {kind: {cam: t.to_dict() for cam, t in sorted(found.items())}
                                 for kind, found in sorted(other_models.items())}
    write(Path(path), (json.dumps(body, indent=2) + "\n").encode())


def load_thresholds(path: Path, camera_model: str | None = None) -> dict[str, Thresholds]:
    """Per-camera thresholds from a ``consistency.json`` (ValueError naming the file when bad).

    ``camera_model`` (a camera model's name, or ``bicubic`` / ``learned``): only thresholds fitted
    for that kind of camera model, ``{}`` when the file has none. A threshold set that does not say
    which camera model it was fitted for (written by hand) serves any. None: the file's own set."""
    try:
        data = json.loads(Path(path).read_text())
        own = {cam: Thresholds.from_dict(t) for cam, t in data["cameras"].items()}
        others = {kind: {cam: Thresholds.from_dict(t) for cam, t in found.items()}
                  for kind, found in (data.get("camera_models") or {}).items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read consistency thresholds from {path} ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if camera_model is None:
        return own
    kind = camera_model if camera_model in (BICUBIC_MODEL, LEARNED_MODEL) else camera_model_kind(camera_model)
    fitted_for = {t.fit.get("camera_model") for t in own.values()}
    if fitted_for == {None} or {camera_model_kind(n) for n in fitted_for if n} == {kind}:
        return own
    return others.get(kind, {})


def thresholds_for(by_camera: dict[str, Thresholds], camera: str | None) -> Thresholds:
    """The thresholds of ``camera``; else those fitted on all cameras; else the built-in defaults."""
    for key in (camera, "all"):
        if key is not None and key in by_camera:
            return by_camera[key]
    return Thresholds()


@dataclass
class Consistency:
    """The consistency figures of one output and its verdict."""

    psnr_y: float
    flagged_share: float
    peak: float
    colour_shift: tuple[float, ...]
    intensity_shift: float
    camera: str
    verdict: str
    reasons: list[str]
    map: np.ndarray | None = field(default=None, repr=False)  # LR-sized smoothed |r_Y| / pixel threshold
    abs_residual: np.ndarray | None = field(default=None, repr=False)  # LR-sized smoothed |r_Y| in levels
    structure: np.ndarray | None = field(default=None, repr=False)  # LR-sized local gradient of the input's Y
    local_peak: float = 0.0  # largest smoothed |r_Y| / (local_floor + local_slope * structure) inside
    border_peak: float = 0.0  # the same on the outermost LR pixel ring (0 when the local limit is off)

    def record(self) -> dict:
        """Flat JSON-ready figures (for ``--json``, the manifest and PNG text)."""
        return {
            "consistency_verdict": self.verdict,
            "consistency_psnr_y": round(self.psnr_y, PSNR_DECIMALS) if math.isfinite(self.psnr_y) else 99.0,
            "consistency_flagged_share": round(self.flagged_share, SHARE_DECIMALS),
            "consistency_peak": round(self.peak, PEAK_DECIMALS),
            "consistency_colour_shift": [round(c, COLOUR_DECIMALS) for c in self.colour_shift],
            "consistency_intensity_shift": round(self.intensity_shift, 3),
            "consistency_camera": self.camera,
            "consistency_reasons": "; ".join(self.reasons),
        }


def _versus(value: float, limit: float, digits: int, unit: str = "", kept: int | None = None) -> tuple[str, str]:
    """``value`` and ``limit`` with enough digits (up to 3 more, at most the ``kept`` decimals :meth:`Consistency.record`
    keeps of ``value``) that the printed figures differ the way the numbers do: never "39.7 dB is below 39.7 dB".
    Rounded half up from ``value`` as its record keeps it (:func:`fixed`), as pages print it from the manifest with
    ``digits`` decimals: never "41 levels" in a reason beside a page's "40" (the measured 40.504, kept as 40.5). More
    digits than that only where they round to the page's figure: the kept 40.46 reads 40.46, never 40.5 beside 40."""
    page = fixed(value, digits, kept)
    last = digits + 3 if kept is None else min(digits + 3, kept)
    for d in range(digits, last + 1):
        a, b = fixed(value, d, kept), fixed(limit, d, kept)
        if a != b and (d == last or fixed(float(a), digits) == page):
            break
    return a + unit, b + unit


def _beyond(value: float, limit: float, kept: int) -> bool:
    """``value`` above ``limit`` as the record keeps both (``kept`` decimals): a figure that the manifest and a
    reason would print equal to its limit is not over it ("20.00 levels (limit 20.00)" would flag nothing visible)."""
    return round(float(value), kept) > round(float(limit), kept)


def _versus_share(share: float, limit: float) -> tuple[str, str]:
    """:func:`_versus` for shares, through :func:`percent` as pages print them from the manifest: 2 decimals,
    else 4 (all the manifest keeps); never 3, whose "1.125%" could sit beside a page's "1.12%"."""
    for d in (2, SHARE_DECIMALS - 2):
        a, b = percent(share, d), percent(limit, d)
        if a != b:
            break
    return a, b


def verdict(psnr_y: float, share: float, peak: float, colour: Sequence[float],
            t: Thresholds, local: tuple[float, float] = (0.0, 0.0)) -> tuple[str, list[str]]:
    """``("ok" | "check", reasons)``: every threshold an output breaks, in words. ``local``: the
    output's (local_peak, border_peak).

    A consistency PSNR-Y below its limit counts only with evidence a person can see on the map: some
    flagged pixels, or a PSNR at least :data:`PSNR_MARGIN_DB` below the limit. A PSNR figure alone a
    rounding away from its limit made verdicts nobody could find on the image.
    """
    reasons = []
    if _beyond(peak, t.peak, PEAK_DECIMALS):
        v, lim = _versus(peak, t.peak, 0, kept=PEAK_DECIMALS)
        reasons.append(f"a region disagrees with the input by {v} levels (limit {lim})")
    if t.local:
        over = [(value / limit, value, limit, where) for value, limit, where in (
            (local[0], t.local_peak, ""), (local[1], t.border_peak or t.local_peak, " at the image edge"))
            if value > limit]
        if over:
            _, value, limit, where = max(over)
            v, lim = _versus(value, limit, 1)
            reasons.append(f"a region{where} stands out from its surroundings: {v}x the disagreement "
                           f"its structure explains (limit {lim})")
    if _beyond(share, t.share, SHARE_DECIMALS):
        v, lim = _versus_share(share, t.share)
        reasons.append(f"{v} of input pixels disagree (limit {lim})")
    if _beyond(-psnr_y, -t.psnr, PSNR_DECIMALS) and (share > 0 or psnr_y < t.psnr - PSNR_MARGIN_DB):
        v, lim = _versus(psnr_y, t.psnr, 1, " dB", PSNR_DECIMALS)
        reasons.append(f"consistency PSNR-Y {v} is below {lim}")
    worst = max((abs(c) for c in colour), default=0.0)
    if _beyond(worst, t.colour, COLOUR_DECIMALS):
        v, lim = _versus(worst, t.colour, 1, kept=COLOUR_DECIMALS)
        reasons.append(f"colour/intensity shifted by {v} levels (limit {lim})")
    return ("check" if reasons else "ok"), reasons


# ---------------------------------------------------------------- the measure


def _binomial3(r: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    kernel = (k[:, None] * k[None, :])[None, None].to(r)
    return F.conv2d(F.pad(r[None, None], (1, 1, 1, 1), mode="replicate"), kernel)[0, 0]


def _as_unit_chw(img: np.ndarray) -> torch.Tensor:
    """uint8/uint16 HxW / HxWxC -> float (3, H, W) in [-1, 1] (grey replicated; alpha dropped)."""
    arr = np.asarray(img)
    maxval = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype)
    if maxval is None:
        raise ValueError(f"expected uint8 or uint16 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1..4 image, got shape {arr.shape}")
    colour = arr[:, :, :1] if arr.shape[2] in (1, 2) else arr[:, :, :3]
    t = torch.from_numpy(np.ascontiguousarray(colour).astype(np.float32)).permute(2, 0, 1)
    return t.mul_(2.0 / maxval).sub_(1.0).expand(3, -1, -1)


class ConsistencyPass:
    """Feed an output's HR rows top to bottom (as written); :meth:`finish` gives its :class:`Consistency`.

    ``lr`` is the recorded input (uint8/uint16, grey, RGB or with alpha); fed rows are the output
    in the same dtype (grey or RGB; an alpha channel is ignored). ``grey``: compare intensity only.
    ``device``: where the pass computes (the upscaler's, so a GPU upscale is not judged on the CPU);
    a learned camera must be on it too. The figures come back as Python floats and numpy maps.
    """

    def __init__(self, camera: Camera, lr: np.ndarray, thresholds: Thresholds, *, grey: bool | None = None,
                 keep_map: bool = False, device: str | torch.device = "cpu"):
        self.camera, self.thresholds, self.keep_map = camera, thresholds, keep_map
        self.device = torch.device(device)
        arr = np.asarray(lr)
        self.grey = (arr.ndim == 2 or arr.shape[2] in (1, 2)) if grey is None else grey
        self.y = _as_unit_chw(arr).to(self.device)
        self.h, self.w = self.y.shape[1:]
        s = camera.scale
        self.H, self.W = self.h * s, self.w * s
        self.base = torch.empty(3, self.h, self.w, device=self.device)
        self.unshuffled = torch.empty(3 * s * s, self.h, self.w, device=self.device) if camera.whole_image else None
        self._buf = torch.empty(3, 0, self.W, device=self.device)  # HR rows [_buf_top, rows_in) still needed
        self._buf_top = 0
        self.rows_in = 0
        self.lr_done = 0  # LR rows of base computed

    @staticmethod
    def held_bytes(camera: Camera, lr_height: int, lr_width: int) -> int:
        """Estimated bytes the pass holds for an image (for the upscaler's memory plan)."""
        s, n = camera.scale, lr_height * lr_width
        lr_arrays = (3 + 3 + 3 + 2) * n * 4  # input, base, camera output, maps
        band = 3 * (2 * BICUBIC_HALO + 2) * s * lr_width * s * 4 * 2
        if camera.whole_image:
            lr_arrays += 3 * s * s * n * 4 + 8 * 32 * n * 4  # unshuffled HR + G's activations
        return lr_arrays + band

    def feed(self, rows: np.ndarray) -> None:
        """The next HR rows of the output (n, W*scale[, C]) uint8/uint16, as written to the file."""
        band = _as_unit_chw(rows).to(self.device)
        if band.shape[2] != self.W:
            raise ValueError(f"expected output rows {self.W} pixels wide, got {band.shape[2]}")
        if self.rows_in + band.shape[1] > self.H:
            raise ValueError("more output rows than the input's height times the scale")
        self._buf = torch.cat([self._buf, band], dim=1)
        self.rows_in += band.shape[1]
        self._advance(final=self.rows_in == self.H)

    def _advance(self, final: bool) -> None:
        s = self.camera.scale
        ready = self.h if final else max(0, self.rows_in // s - BICUBIC_HALO)
        if ready <= self.lr_done:
            return
        lo, hi = self.lr_done, ready
        a = max(0, lo - BICUBIC_HALO)  # LR rows [a, b) are downsampled; [lo, hi) are kept
        b = self.h if final else min(self.h, hi + BICUBIC_HALO)
        hr = self._buf[:, a * s - self._buf_top:b * s - self._buf_top]
        self.base[:, lo:hi] = downsample(hr[None], s)[0, :, lo - a:hi - a]
        if self.unshuffled is not None:
            rows = self._buf[:, lo * s - self._buf_top:hi * s - self._buf_top]
            self.unshuffled[:, lo:hi] = F.pixel_unshuffle(rows[None], s)[0]
        self.lr_done = hi
        keep_from = max(0, hi - BICUBIC_HALO) * s
        self._buf = self._buf[:, keep_from - self._buf_top:].clone()
        self._buf_top = keep_from

    def finish(self) -> Consistency:
        if self.rows_in != self.H:
            raise ValueError(f"fed {self.rows_in} of {self.H} output rows")
        if isinstance(self.camera, LearnedCamera):
            down = self.camera.from_parts(self.base[None], self.unshuffled[None])[0].float()
        else:
            down = self.base
        return summarise(down, self.y, self.camera.name, self.thresholds, grey=self.grey, keep_map=self.keep_map)


def summarise(down: torch.Tensor, y: torch.Tensor, camera: str, t: Thresholds, *, grey: bool = False,
              keep_map: bool = False) -> Consistency:
    """Figures and verdict from camera(x_hat) and y, both (3, h, w) in [-1, 1] on one device."""
    r = (down.clamp(-1, 1) - y) * 127.5  # 8-bit levels
    r_y = torch.einsum("chw,c->hw", r, Y_WEIGHTS.to(r))
    mse = float(r_y.square().mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    smooth = _binomial3(r_y).abs_()
    peak = float(smooth.max())
    share = float((smooth > t.pixel).float().mean())
    per_channel = r.mean(dim=(1, 2))
    colour = (float(per_channel.mean()),) if grey else tuple(float(c) for c in per_channel)
    intensity = float(r_y.mean())
    structure = local_structure(y) if (t.local or keep_map) else None
    local = ring_maxima(local_ratio(smooth, structure, t.local_floor, t.local_slope)) if t.local else (0.0, 0.0)
    v, reasons = verdict(psnr, share, peak, colour, t, local)
    return Consistency(psnr, share, peak, colour, intensity, camera, v, reasons,
                       map=(smooth / t.pixel).cpu().numpy() if keep_map else None,
                       abs_residual=smooth.cpu().numpy() if keep_map else None,
                       structure=structure.cpu().numpy() if keep_map else None, local_peak=local[0],
                       border_peak=local[1])


def local_ratio(abs_residual, structure, floor: float, slope: float):
    """Smoothed |residual| over what the input's structure explains (``floor + slope * structure``),
    counted only where the residual itself is visible (>= VISIBLE_LEVELS); tensors or arrays."""
    ratio = abs_residual / (floor + slope * structure)
    return ratio * (abs_residual >= VISIBLE_LEVELS)


def local_structure(y: torch.Tensor) -> torch.Tensor:
    """How much residual the input's structure explains: the 3x3 local maximum of the gradient
    magnitude (central differences, levels per pixel) of the recorded LR's Y; ``y`` (3, h, w) in [-1, 1]."""
    lum = torch.einsum("chw,c->hw", y, Y_WEIGHTS.to(y)).mul(127.5)[None, None]
    p = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return F.max_pool2d(torch.hypot(gx, gy), 3, stride=1, padding=1)[0, 0]


def ring_maxima(z) -> tuple[float, float]:
    """(largest value inside, largest on the outermost pixel ring) of an LR map (tensor or array);
    an image of 2 pixels or fewer a side is all ring."""
    z = torch.as_tensor(z)
    if min(z.shape) <= 2:
        return 0.0, float(z.max())
    ring = torch.cat([z[0], z[-1], z[1:-1, 0], z[1:-1, -1]])
    return float(z[1:-1, 1:-1].max()), float(ring.max())


def measure(camera: Camera, sr: np.ndarray, lr: np.ndarray, thresholds: Thresholds, *,
            keep_map: bool = False) -> Consistency:
    """The consistency of a whole output ``sr`` (uint8/uint16) with its input ``lr``."""
    sr, lr = np.asarray(sr), np.asarray(lr)
    s = camera.scale
    if sr.shape[0] != lr.shape[0] * s or sr.shape[1] != lr.shape[1] * s:
        raise ValueError(f"output {sr.shape[1]}x{sr.shape[0]} is not {s}x the input "
                         f"{lr.shape[1]}x{lr.shape[0]}")
    cp = ConsistencyPass(camera, lr, thresholds, keep_map=keep_map)
    cp.feed(sr)
    return cp.finish()


# ---------------------------------------------------------------- the map a person reads


def _lr_intensity(lr: np.ndarray) -> np.ndarray:
    return (_as_unit_chw(np.asarray(lr))[0].numpy() + 1.0) * 127.5  # first channel's intensity, 0-255


def map_png(result: Consistency, lr: np.ndarray, min_side: int = 256, output: np.ndarray | None = None) -> bytes:
    """The heat map (:mod:`.consistency_map`: two tints and a legend) over the dimmed input at LR size,
    enlarged by whole pixels up to ``min_side``; with ``output`` (the restored image) and a ``check``
    verdict, the panel LR | output | map. PNG bytes."""
    from sr_pipeline.sr.serve import consistency_map

    if result.map is None:
        raise ValueError("the consistency was measured without keep_map")
    intensity = _lr_intensity(lr)
    if output is not None and result.verdict == "check":
        return consistency_map.panel_png(result.map, intensity, _rgb8(lr), _rgb8(output), min_side)
    return consistency_map.map_png(result.map, intensity, min_side)


def _rgb8(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 grey, RGB or with alpha -> uint8 RGB for a picture."""
    return np.rint((_as_unit_chw(np.asarray(img)).permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------- fitting thresholds


@dataclass
class CalibrationSample:
    """One calibration output's consistency (with its map) and its true error against the HR
    (PSNR-Y in dB; None when the HR is not read: the fit needs none, only the Spearman does)."""

    consistency: Consistency
    true_psnr_y: float | None


LOCAL_BINS = 20  # structure bins of the local fit (quantiles of the calibration pixels)
LOCAL_MIN_BIN = 50  # pixels a bin needs for its residual quantile to count
LOCAL_FLOOR = 0.5  # levels: the least residual any LR pixel is allowed (sensor noise, 8-bit rounding)


def fit_local(residuals: Sequence[np.ndarray], structures: Sequence[np.ndarray],
              quantile: float = 0.999) -> tuple[float, float]:
    """(floor a, slope b): the ``quantile`` of the calibration's smoothed |residual| per bin of local
    structure, fitted by a straight line a + b * structure (least squares; a >= LOCAL_FLOOR, b >= 0)."""
    res = np.concatenate([np.ravel(r) for r in residuals])
    struct = np.concatenate([np.ravel(s) for s in structures])
    edges = np.quantile(struct, np.linspace(0.0, 1.0, LOCAL_BINS + 1))
    which = np.clip(np.searchsorted(edges, struct, side="right") - 1, 0, LOCAL_BINS - 1)
    xs, ys = [], []
    for k in range(LOCAL_BINS):
        inside = which == k
        if inside.sum() >= LOCAL_MIN_BIN:
            xs.append(float(np.median(struct[inside])))
            ys.append(float(np.quantile(res[inside], quantile)))
    if len(set(xs)) < 2:  # too few pixels or no structure to relate to: a flat limit
        return max(float(np.quantile(res, quantile)), LOCAL_FLOOR), 0.0
    slope, floor = np.polyfit(xs, ys, 1)
    return max(float(floor), LOCAL_FLOOR), max(float(slope), 0.0)


def fit_thresholds(samples: Sequence[CalibrationSample], camera: str, *, pixel_quantile: float = 0.999,
                   margin: float = 1.25, local_quantile: float = 0.99, local_margin: float = 1.5) -> Thresholds:
    """Thresholds for a camera from its calibration outputs.

    The served model's outputs on the calibration pairs are the plant's known-acceptable outputs
    (the gate scored them against their HR). The pixel threshold is the ``pixel_quantile`` of their
    smoothed residuals; the per-image limits sit ``margin`` beyond the worst calibration output
    (1 dB for PSNR), so an output is ``check`` when it disagrees with its input more than any output
    whose true error was measured. The local limit relates the residual to the input's structure
    (:func:`fit_local`) and allows ``local_margin`` times the worst calibration ratio, inside and on
    the outermost pixel ring separately (the ring at least as much as the inside). ``local_quantile``
    and ``local_margin`` were selected on RealSR's odd split (docs/benchmarks.md): the
    smallest margin whose false alarms stayed <= 5 % for both camera models. The fit also records how consistency relates to true error
    (Spearman across the images whose true error is known), for the report.
    """
    if not samples:
        raise ValueError("fitting consistency thresholds needs at least one calibration pair")
    if any(s.consistency.abs_residual is None or s.consistency.structure is None for s in samples):
        raise ValueError("calibration consistency must be measured with keep_map=True")
    pooled = np.concatenate([s.consistency.abs_residual.ravel() for s in samples])
    pixel = max(float(np.quantile(pooled, pixel_quantile)), VISIBLE_LEVELS)
    shares = [float((s.consistency.abs_residual > pixel).mean()) for s in samples]
    peaks = [s.consistency.peak for s in samples]
    psnrs = [min(s.consistency.psnr_y, 99.0) for s in samples]
    colours = [max(abs(c) for c in s.consistency.colour_shift) for s in samples]
    floor, slope = fit_local([s.consistency.abs_residual for s in samples],
                             [s.consistency.structure for s in samples], local_quantile)
    rings = [ring_maxima(local_ratio(s.consistency.abs_residual, s.consistency.structure, floor, slope))
             for s in samples]
    local_peak = max(max(r[0] for r in rings) * local_margin, 1.0)
    # The ring only ever gets more room than the inside (a camera model's edge effects), never less:
    # its few pixels make its own worst ratio a noisy estimate.
    border_peak = max(max(r[1] for r in rings) * local_margin, local_peak)
    known = [(p, s.true_psnr_y) for p, s in zip(psnrs, samples)
             if s.true_psnr_y is not None and math.isfinite(s.true_psnr_y)]
    rho = spearman(*zip(*known)) if len(known) > 2 else None
    fit = {"pairs": len(samples), "pixel_quantile": pixel_quantile, "margin": margin,
           "local_quantile": local_quantile, "local_margin": local_margin, "pairs_with_true_error": len(known),
           "spearman_consistency_vs_true_psnr": rho if rho is not None and math.isfinite(rho) else None,
           "worst_calibration": {"peak": max(peaks), "share": max(shares), "psnr_y": min(psnrs),
                                 "colour": max(colours)},
           "worst_calibration_local": {"inside": max(r[0] for r in rings), "border": max(r[1] for r in rings)}}
    # Floors keep the thresholds valid for outputs that agree perfectly (peak 0) or not at all (0 dB),
    # and above what a person could see (VISIBLE_*).
    return Thresholds(pixel=round(pixel, 3), peak=round(max(max(peaks) * margin, pixel, VISIBLE_PEAK), 3),
                      share=round(min(0.5, max(max(shares) * margin, 0.001)), 6),
                      psnr=round(min(max(min(psnrs) - 1.0, 1.0), VISIBLE_PSNR), 3),
                      colour=round(max(max(colours) * margin, VISIBLE_COLOUR), 3),
                      local_floor=round(floor, 4), local_slope=round(slope, 5), local_peak=round(local_peak, 4),
                      border_peak=round(border_peak, 4),
                      camera=camera, source=f"calibration ({len(samples)} pairs)", fit=fit)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ---------------------------------------------------------------- enforcing consistency


@torch.inference_mode()
def enforce_consistency(camera: Camera, x_hr: torch.Tensor, y: torch.Tensor, iterations: int = 3,
                        step: float = 1.0) -> torch.Tensor:
    """Iterative back-projection (Irani and Peleg): ``x <- x + step * up(y - camera(x))``.

    ``x_hr`` (1, 3, H, W) and ``y`` (1, 3, h, w) in [-1, 1]; returns the projected output, clamped.
    Each iteration removes most of the LR residual that the camera model can see, so camera(x)
    moves towards y while the detail the camera cannot see (above its Nyquist band) is kept.
    """
    if iterations < 0 or not (0 < step <= 2):
        raise ValueError("enforce_consistency needs iterations >= 0 and 0 < step <= 2")
    x = x_hr.clone()
    for _ in range(iterations):
        x.add_(upsample(y - camera(x), camera.scale), alpha=step).clamp_(-1, 1)
    return x
