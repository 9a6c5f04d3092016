"""The learnable downsampler G (method.md section 3): HR image + noise -> a plausible field-camera LR.

Two designs share one class (``noise_model`` in its config):

- ``input`` (the first design): G runs at LR resolution on ``[y_T, down(x), pixel_unshuffle(x, s)]``
  with ``y_T = down(x) + kappa_d sqrt(eta_T) eps'`` and returns ``down(x) + r``. Nothing makes the
  network use eps', and measured it did not (LR diversity 0.002).
- ``camera``: the parts a camera has, each learnable and each measurable apart.
  1. **Blur and aliasing**: ``s = down(x) + r(down(x), pixel_unshuffle(x))``, deterministic. This is
     the part L_struct holds to the scene (its low band must match down(x)'s).
  2. **Colour and intensity response** (``colour_transform``): ``c = M s + b`` per pixel, a 3x3
     matrix (1x1 gain for a grey camera) and an offset, starting at the identity. It acts *after*
     the structure term, so a camera's cast or gain can be learned without moving the scene.
  3. **Sensor noise** drawn from eps': ``n = sqrt(read^2 + gain * (c + 1) / 2) * (k * eps')``, a
     Poisson-Gaussian (signal-dependent) level per channel and a 3x3 kernel k of unit energy for the
     spatial correlation that demosaicking leaves. eps' = 0 gives the deterministic ``c``; different
     eps' give different, equally plausible noise of the same level.
  4. **Compression** (``jpeg``, not learned): a camera whose uploads are JPEG has its noisy LR
     compressed with the encoder settings read from those files (sr/models/differentiable_jpeg.py), so the noise level above
     is the sensor's before compression. eps' = 0 (the camera's optics and response) is not compressed.
  With ``grey`` (a grey field camera) the structure is one intensity per pixel and the noise one draw
  shared by the three channels, so a grey camera's LR never carries invented colour.
  The design follows Ji et al. (NTIRE 2020 winner: blur and noise estimated from the real LR, noise
  injected) and Fritsche et al. (frequency separation); docs/camera_model.md says why.

The residual's last layer starts at zero and the colour transform at the identity, so an untrained
G is bicubic downsampling plus (with ``camera``) about one level of noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from sr_pipeline.sr.images.tensors import LUMA, downsample
from sr_pipeline.sr.models.differentiable_jpeg import jpeg_roundtrip
from sr_pipeline.sr.images.jpeg_settings import JpegSettings


def _luma(x: torch.Tensor) -> torch.Tensor:
    """The intensity a grey sensor records of an RGB batch (the luma, as ``grey_rgb`` makes the training
    references), so a grey G fed a colour HR image matches its camera rather than the channels' mean."""
    if x.shape[1] != len(LUMA):
        return x.mean(dim=1, keepdim=True)
    return torch.einsum("c,bchw->bhw", torch.as_tensor(LUMA, dtype=x.dtype, device=x.device), x)[:, None]


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CameraOutput(NamedTuple):
    """G's output, the part before colour and noise (what L_struct compares with down(x)) and the
    noise that was added (None at eps' = 0 or with the first design)."""

    lr: torch.Tensor
    structure: torch.Tensor
    noise: torch.Tensor | None = None


# Initial noise: one 8-bit level of read noise, almost no shot noise (values are in [-1, 1]).
_INIT_READ_SIGMA = 2.0 / 255.0
_INIT_SHOT_GAIN = 1e-5
# blur_model kernel: a Gaussian blur of the HR image before bicubic downsampling, starting near a delta.
# Its log-sigmas are stored divided by _BLUR_RATE so that Adam, whose steps are about the learning rate
# in size, moves them _BLUR_RATE times faster than the noise scalars: a camera may blur by 2-3 HR pixels.
_INIT_BLUR_SIGMA = 0.3  # HR pixels
_BLUR_RATE = 5.0
_MAX_BLUR_RADIUS = 12


class LearnedDownsampler(ModelMixin, ConfigMixin):
    """G(x, eps') -> y_hat: a single-step, noise-conditioned camera model on bicubic downsampling."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        scale: int = 4,
        image_channels: int = 3,
        channels: int = 32,
        num_blocks: int = 4,
        norm_num_groups: int = 8,
        kappa: float = 1.0,
        sqrt_eta_end: float = 0.99,
        noise_model: Literal["input", "camera"] = "input",
        colour_transform: bool = False,
        grey: bool = False,
        blur_model: Literal["residual", "kernel"] = "residual",
        jpeg: dict | None = None,
    ):
        super().__init__()
        if channels % norm_num_groups:
            raise ValueError("channels must be divisible by norm_num_groups")
        if noise_model not in ("input", "camera"):
            raise ValueError(f"noise_model must be 'input' or 'camera', not {noise_model!r}")
        if colour_transform and noise_model != "camera":
            raise ValueError("colour_transform needs noise_model 'camera'")
        if grey and (noise_model != "camera" or colour_transform):
            raise ValueError("a grey camera model needs noise_model 'camera' and no colour_transform")
        if blur_model not in ("residual", "kernel"):
            raise ValueError(f"blur_model must be 'residual' or 'kernel', not {blur_model!r}")
        if blur_model == "kernel" and noise_model != "camera":
            raise ValueError("blur_model 'kernel' needs noise_model 'camera' (the noise then carries all grain)")
        if jpeg is not None and noise_model != "camera":
            raise ValueError("a jpeg stage needs noise_model 'camera'")
        self.jpeg = JpegSettings.from_config(jpeg) if jpeg is not None else None
        if grey and self.jpeg is not None and not self.jpeg.grey:
            # grey scenes stored as colour JPEGs (NEU-DET): their chroma is flat, so only the luma is
            # compressed, and G's LR stays exactly grey
            self.jpeg = JpegSettings(self.jpeg.tables[:1], "grey")
        c = image_channels
        c_in = (2 if noise_model == "input" else 1) * c + c * scale * scale
        if noise_model == "camera":
            self.log_read_sigma = nn.Parameter(torch.full((c,), math.log(_INIT_READ_SIGMA)))
            self.log_shot_gain = nn.Parameter(torch.full((c,), math.log(_INIT_SHOT_GAIN)))
            kernel = torch.zeros(c, 1, 3, 3)
            kernel[:, 0, 1, 1] = 1.0
            self.noise_kernel = nn.Parameter(kernel)
        if colour_transform:
            self.colour_matrix = nn.Parameter(torch.eye(c))
            self.colour_offset = nn.Parameter(torch.zeros(c))
        if blur_model == "kernel":  # an anisotropic Gaussian: it can only blur, never draw texture
            self.blur_log_sigma = nn.Parameter(torch.full((2,), math.log(_INIT_BLUR_SIGMA) / _BLUR_RATE))
            self.blur_angle = nn.Parameter(torch.zeros(1))
            return
        self.conv_in = nn.Conv2d(c_in, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResBlock(channels, norm_num_groups) for _ in range(num_blocks)))
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def noise_std(self) -> float:
        """kappa_d sqrt(eta_T): the standard deviation of the noise added to down(x) to form y_T."""
        return self.config.kappa * self.config.sqrt_eta_end

    def lr_shape(self, x_hr: torch.Tensor) -> tuple[int, ...]:
        s = self.config.scale
        return (x_hr.shape[0], self.config.image_channels, x_hr.shape[-2] // s, x_hr.shape[-1] // s)

    def forward(self, x_hr: torch.Tensor, noise: torch.Tensor | None = None,
                return_parts: bool = False) -> torch.Tensor | CameraOutput:
        """HR batch in [-1, 1] (sides multiples of ``scale``) and LR-shaped noise (None: zero) -> LR batch
        (with ``return_parts``, a ``CameraOutput`` that also holds the structure part)."""
        s = self.config.scale
        h, w = x_hr.shape[-2:]
        if h % s or w % s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        if self.config.blur_model == "kernel":  # needs only the HR: no bicubic base, no unshuffled copy
            out = self._camera_output(downsample(self.blur(x_hr), s), noise)
        else:
            out = self.camera_parts(downsample(x_hr, s), F.pixel_unshuffle(x_hr, s), noise)
        return out if return_parts else out.lr

    def from_parts(self, base: torch.Tensor, unshuffled: torch.Tensor,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
        """G from its LR-sized inputs: ``down(x)`` and ``pixel_unshuffle(x, scale)`` (which a caller
        streaming the HR image in row bands can build without holding it)."""
        return self.camera_parts(base, unshuffled, noise).lr

    def camera_parts(self, base: torch.Tensor, unshuffled: torch.Tensor,
                     noise: torch.Tensor | None = None) -> CameraOutput:
        if self.config.blur_model == "kernel":  # from_parts: the HR is rebuilt exactly from its unshuffled copy
            structure = downsample(self.blur(F.pixel_shuffle(unshuffled, self.config.scale)), self.config.scale)
            return self._camera_output(structure, noise)
        if self.config.noise_model == "input":
            y_t = base if noise is None else base + self.noise_std * noise.to(base.dtype)
            # As the upsampler's x_t, y_T is scaled to keep the input variance near one.
            y_t = y_t / math.sqrt(self.noise_std**2 + 1)
            inputs = [y_t, base, unshuffled]
        else:
            inputs = [base, unshuffled]
        h = self.conv_in(torch.cat(inputs, dim=1))
        structure = base + self.conv_out(F.silu(self.norm_out(self.blocks(h))))
        if self.config.noise_model == "input":
            return CameraOutput(structure, structure)
        return self._camera_output(structure, noise)

    def _camera_output(self, structure: torch.Tensor, noise: torch.Tensor | None) -> CameraOutput:
        """Grey, colour response and sensor noise after the structure part."""
        if self.config.grey:  # a grey camera: one intensity per pixel, one noise draw shared by the channels
            structure = _luma(structure).expand_as(structure)
        out = self.colour(structure)
        if noise is None:
            return CameraOutput(out, structure)
        if self.config.grey:  # the first channel's noise parameters, one draw for all channels
            n = self.sensor_noise(out[:, :1].detach(), noise[:, :1].to(out.dtype)).expand_as(out)
        else:
            n = self.sensor_noise(out.detach(), noise.to(out.dtype))
        lr = out + n
        if self.jpeg is not None:
            lr = jpeg_roundtrip(lr, self.jpeg, self._block_phase())
        return CameraOutput(lr, structure, n)

    def as_stored(self, lr: torch.Tensor) -> torch.Tensor:
        """A noise-free LR of G as the camera stores its images: through the JPEG stage (block grid at the
        corner, as a whole image's or a grid-aligned crop's) when G has one, else unchanged. A registered
        real LR was stored that way, so G's LR is compared with it after the same compression."""
        return lr if self.jpeg is None else jpeg_roundtrip(lr, self.jpeg, (0, 0))

    def _block_phase(self) -> tuple[int, int]:
        """Where the JPEG block grid starts: a training crop's phase in the camera's frame is unknown, so a
        random one (else D_LR could tell fakes by their grid); a whole image's grid starts at its corner."""
        if not self.training:
            return (0, 0)
        sx, sy = self.jpeg.factors
        return (int(torch.randint(8 * sy, ())), int(torch.randint(8 * sx, ())))

    CAMERA_PARAMETERS = ("log_read_sigma", "log_shot_gain", "noise_kernel", "colour_matrix", "colour_offset",
                         "blur_log_sigma", "blur_angle")

    def blur_sigmas(self) -> torch.Tensor:
        """The kernel's two standard deviations in HR pixels (blur_model kernel)."""
        return torch.exp(_BLUR_RATE * self.blur_log_sigma)

    def blur_kernel(self) -> torch.Tensor:
        """The anisotropic Gaussian (sums to one, non-negative: its response never exceeds one at any frequency)."""
        sig = self.blur_sigmas().clamp(max=_MAX_BLUR_RADIUS / 3)
        r = int(min(_MAX_BLUR_RADIUS, math.ceil(3 * float(sig.detach().max()))))
        ax = torch.arange(-r, r + 1, dtype=sig.dtype, device=sig.device)
        y, x = torch.meshgrid(ax, ax, indexing="ij")
        cos, sin = torch.cos(self.blur_angle), torch.sin(self.blur_angle)
        u, v = cos * x + sin * y, -sin * x + cos * y
        k = torch.exp(-0.5 * ((u / sig[0]) ** 2 + (v / sig[1]) ** 2))
        return k / k.sum()

    def blur(self, x_hr: torch.Tensor) -> torch.Tensor:
        k = self.blur_kernel().to(x_hr.dtype)
        r = k.shape[-1] // 2
        if r == 0:
            return x_hr
        c = x_hr.shape[1]
        return F.conv2d(F.pad(x_hr, (r, r, r, r), mode="reflect"), k.expand(c, 1, *k.shape), groups=c)

    def camera_parameters(self) -> list[nn.Parameter]:
        """The few scalars of the colour and noise parts (trained at their own, higher learning rate)."""
        return [p for n, p in self.named_parameters() if n in self.CAMERA_PARAMETERS]

    BLUR_PARAMETERS = ("blur_log_sigma", "blur_angle")

    def blur_parameters(self) -> list[nn.Parameter]:
        """What sets G's blur: the residual network's weights, or the kernel's sigmas and angle."""
        if self.config.blur_model == "kernel":
            return [p for n, p in self.named_parameters() if n in self.BLUR_PARAMETERS]
        return self.network_parameters()

    COLOUR_PARAMETERS = ("colour_matrix", "colour_offset")

    def colour_parameters(self) -> list[nn.Parameter]:
        """The colour transform's matrix and offset (none without one)."""
        return [p for n, p in self.named_parameters() if n in self.COLOUR_PARAMETERS]

    def network_parameters(self) -> list[nn.Parameter]:
        """The blur residual network's weights."""
        return [p for n, p in self.named_parameters() if n not in self.CAMERA_PARAMETERS]

    def colour(self, y: torch.Tensor) -> torch.Tensor:
        """The colour and intensity response: ``M y + b`` per pixel (the identity without a transform)."""
        if not self.config.colour_transform:
            return y
        return torch.einsum("ij,bjhw->bihw", self.colour_matrix, y) + self.colour_offset[None, :, None, None]

    def noise_sigma(self, signal: torch.Tensor) -> torch.Tensor:
        """Per-pixel noise standard deviation (in [-1, 1] units) at this signal level."""
        c = signal.shape[1]
        read = torch.exp(2 * self.log_read_sigma[:c])[None, :, None, None]
        gain = torch.exp(self.log_shot_gain[:c])[None, :, None, None]
        return torch.sqrt(read + gain * ((signal + 1) / 2).clamp(min=0))

    @torch.no_grad()
    def scale_noise(self, factor: float) -> None:
        """Multiply the noise level by ``factor`` at every signal level (read sigma x f, shot gain x f^2), keeping
        its signal dependence and correlation."""
        self.log_read_sigma.add_(math.log(factor))
        self.log_shot_gain.add_(2 * math.log(factor))

    @torch.no_grad()
    def set_blur_sigma(self, sigma: float) -> None:
        """Make the kernel an isotropic Gaussian of ``sigma`` HR pixels (blur_model kernel)."""
        if self.config.blur_model != "kernel":
            raise ValueError("set_blur_sigma needs blur_model kernel")
        self.blur_log_sigma.fill_(math.log(sigma) / _BLUR_RATE)

    def sensor_noise(self, signal: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Signal-dependent, spatially correlated noise drawn from eps' (zero mean, per-pixel std ``noise_sigma``)."""
        kernel = self.noise_kernel[: eps.shape[1]]
        k = kernel / kernel.flatten(1).norm(dim=1).clamp(min=1e-8)[:, None, None, None]
        correlated = F.conv2d(F.pad(eps, (1, 1, 1, 1), mode="reflect"), k, groups=eps.shape[1])
        return self.noise_sigma(signal) * correlated

    def camera_summary(self) -> dict:
        """What the camera parts learned, in 8-bit levels, for reports and the docs (empty for ``input``)."""
        if self.config.noise_model != "camera":
            return {}
        with torch.no_grad():
            levels = [0.1, 0.5, 0.9]
            sig = [self.noise_sigma(torch.full((1, self.config.image_channels, 1, 1), 2 * v - 1)).flatten() * 127.5
                   for v in levels]
            out = {"noise_sigma_levels": {f"{v:.1f}": [round(float(a), 3) for a in s] for v, s in zip(levels, sig)}}
            if self.config.blur_model == "kernel":
                out["blur_sigmas_hr_px"] = [round(float(a), 3) for a in self.blur_sigmas()]
                out["blur_angle_deg"] = round(math.degrees(float(self.blur_angle)), 1)
            if self.jpeg is not None:
                out["jpeg"] = self.jpeg.describe()
            if self.config.colour_transform:
                out["colour_matrix"] = [[round(float(a), 4) for a in row] for row in self.colour_matrix]
                out["colour_offset_levels"] = [round(float(a) * 127.5, 3) for a in self.colour_offset]
        return out


def load_downsampler(model_dir: Path, device: str = "cpu") -> LearnedDownsampler:
    """A saved downsampler folder, frozen and in eval mode."""
    return LearnedDownsampler.from_pretrained(Path(model_dir)).to(device).eval().requires_grad_(False)
