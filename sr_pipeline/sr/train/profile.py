"""Training profiles: one validated object per profile (``configs/*.yaml``), saved with every model.

A profile holds every knob of the teacher's and the co-learning stage's training, the networks'
sizes, the diffusion schedule and the synthetic degradation. Nothing else in the code base holds
a training constant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sr_pipeline.sr.data.degrade import DegradationConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetConfig(_Strict):
    """The LR-resolution UNet of the teacher and the student (``SRUNet``)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = Field(1, ge=1)
    attention_levels: tuple[bool, ...] = (False, False, False)
    norm_num_groups: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "NetConfig":
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels needs one flag per entry of block_out_channels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("every block_out_channels entry must be divisible by norm_num_groups")
        return self


class DiffusionConfig(_Strict):
    num_steps: int = Field(15, ge=1, le=1000)
    kappa: float = Field(2.0, gt=0)
    power: float = Field(0.3, gt=0)


class OptimConfig(_Strict):
    """One training stage's loop: optimiser, schedule, EMA, checkpointing and data."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(16, ge=1)
    patch_size: int = Field(64, ge=8, description="HR crop side in pixels; a multiple of scale * 2^(levels-1)")
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_warmup: int = Field(
        10, ge=2, description="the EMA's decay at step s is min(ema_decay, (1 + s) / (ema_warmup + s)); 10 as in "
        "diffusers, so at 1,000 steps the decay is still under 0.991; 2 keeps a running mean of every step until "
        "the decay reaches ema_decay"
    )
    save_every: int = Field(200, ge=1, description="write resumable state every N steps")
    log_every: int = Field(25, ge=1)
    seed: int = Field(0, ge=0)
    mixed_precision: Literal["auto", "no", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU, fp32 on the CPU"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")


class DownsamplerConfig(_Strict):
    """The learnable downsampler G (``LearnedDownsampler``): residual blocks at LR resolution."""

    channels: int = Field(32, ge=1)
    num_blocks: int = Field(4, ge=0)
    norm_num_groups: int = Field(8, ge=1)
    kappa: float = Field(1.0, ge=0, description="kappa_d: y_T = down(x) + kappa_d * 0.99 * eps' (noise_model input)")
    noise_model: Literal["input", "camera"] = Field(
        "input", description="input: eps' enters the residual network (the first design); camera: blur residual, "
        "then colour response, then signal-dependent noise drawn from eps' (sr/models/downsampler.py)"
    )
    colour_transform: bool = Field(False, description="learn a colour matrix and offset after the structure term "
                                   "(needs noise_model camera)")
    blur_model: Literal["residual", "kernel"] = Field(
        "residual", description="residual: a network's residual on bicubic downsampling; kernel: a learned "
        "anisotropic Gaussian before it, which can only blur, so all grain must come from the noise drawn from "
        "eps' (needs noise_model camera; docs/camera_model.md)"
    )
    jpeg_stage: bool = Field(
        False, description="when most of the field camera's uploads are JPEG, compress G's noisy LR with the "
        "encoder settings read from their headers (quantisation tables, chroma subsampling; sr/models/differentiable_jpeg.py), so the "
        "noise G learns is the sensor's before compression (needs noise_model camera). Off by default: on the "
        "demo it did not bring the learned noise to the sensors' and moved the grey camera's LR set away from "
        "the true camera (it brought the colour camera's closer; docs/camera_model.md)"
    )

    @model_validator(mode="after")
    def _check(self) -> "DownsamplerConfig":
        if self.channels % self.norm_num_groups:
            raise ValueError("downsampler.channels must be divisible by norm_num_groups")
        if self.colour_transform and self.noise_model != "camera":
            raise ValueError("downsampler.colour_transform needs downsampler.noise_model: camera")
        if self.blur_model == "kernel" and self.noise_model != "camera":
            raise ValueError("downsampler.blur_model kernel needs downsampler.noise_model: camera")
        return self


class DiscriminatorConfig(_Strict):
    """A spectral-normalised patch discriminator (``PatchDiscriminator``)."""

    base_channels: int = Field(32, ge=1)
    num_downsamples: int = Field(3, ge=1)
    max_channels: int = Field(128, ge=1)


class LossWeights(_Strict):
    """The generator-side loss terms of method.md section 4; 0 switches a term off (and skips it)."""

    rec: float = Field(1.0, ge=0, description="L1(x_hat, x)")
    lpips: float = Field(0.1, ge=0, description="LPIPS(x_hat, x); used only when the AlexNet weights are present")
    distill: float = Field(1.0, ge=0, description="MSE(x_hat, teacher's sample from the same noise)")
    adv_hr: float = Field(0.01, ge=0, description="adversarial loss of x_hat against D_HR (0: no D_HR)")
    adv_lr: float = Field(0.2, ge=0, description="adversarial loss of y_hat against D_LR (0: no D_LR)")
    struct: float = Field(1.0, ge=0, description="L1(lowpass(y_hat), lowpass(down(x)))")
    # Kept low: while U is still blurry the cycle pays G to sharpen, away from the field camera.
    cyc_lr: float = Field(0.1, ge=0, description="L1(G(U(y_r, eps), 0), y_r) on real field LR")
    noise_match: float = Field(0.0, ge=0, description="|noise level(y_hat) - noise level(y_r)| per channel and "
                               "detail band, measured where the scene is flat; trains only G's noise part")
    sharpness_match: float = Field(0.0, ge=0, description="|edge sharpness(y_hat) - edge sharpness(y_r)| (full-band "
                                   "over low-band gradient at strong edges); trains G's blur, not its noise")
    colour_match: float = Field(0.0, ge=0, description="L1 between the low-band colour mean and covariance of y_hat "
                                "and y_r batches; trains G's colour transform")
    inverse: float = Field(0.0, ge=0, description="SinSR: MSE(U at t=0 of the teacher's x0, x_T)")
    consistency: float = Field(0.0, ge=0, description="SinSR: MSE(U at t=T of U at t=0 of x, x)")
    paired: float = Field(1.0, ge=0, description="G's LR of a fit pair's HR against the pair's real LR (low band, "
                          "high band at eps' = 0, flat-region noise; sr/train/paired_fit.py); only for a field camera "
                          "with fit pairs, else skipped")


class PairedFitConfig(_Strict):
    """How a field camera's fit pairs (registered HR/LR shots of the same scenes, sr/train/paired_fit.py) pin its
    camera model G: a paired pre-fit of G before co-learning, then the ``paired`` loss weight during it.
    Unused for a camera without fit pairs, which trains exactly as before."""

    prefit_steps: int = Field(300, ge=0, description="steps of the paired term alone on G before co-learning "
                              "(0: no pre-fit, only the paired term during co-learning)")
    prefit_lr: float = Field(1e-3, gt=0, description="Adam learning rate of G's blur network during the pre-fit "
                             "(its camera parameters use camera_params_lr)")
    batch_size: int = Field(8, ge=1, description="paired crops per step (pre-fit and co-learning)")
    patch_size: int = Field(128, ge=8, description="HR side of a paired crop (a multiple of the scale; pairs "
                            "smaller than it are cropped whole)")
    noise: float = Field(1.0, ge=0, description="weight of the flat-region noise statistic inside the paired "
                         "term (the low and high bands weigh 1)")
    min_pairs: int = Field(5, ge=1, strict=True, description="fewer fit pairs than this are used, with a warning in the log, "
                           "training.json and the asset, and G's blur is not held by blur_lr_scale but as few_pairs_hold "
                           "decides: on RealSR's Canon camera 1 and 2 pairs with a free blur gave a student below the "
                           "one co-learned without pairs, 5 and 10 one above it (docs/benchmarks.md)")
    blur_lr_scale: float = Field(  # strict: YAML's true/yes is not a rate of 1
        0.0, ge=0, le=1, strict=True, description="during co-learning, G's blur (its residual network, or its kernel) learns at "
        "this share of its learning rate: the pre-fit pinned the blur on the pairs, and the unpaired terms (D_LR, "
        "the cycle) pulled it sharper than the camera (RealSR Nikon: 1.47x the real LR's fine detail at 1, 0.88x "
        "at 0). 0 holds it at its pre-fit value while the colour and noise parts keep learning; chosen on "
        "RealSR's selection split (docs/benchmarks.md). Applies with at least min_pairs fit pairs; with fewer, "
        "few_pairs_hold decides whether the blur is held or learns at its full rate")
    few_pairs_hold: Literal["judged", "never", "always"] = Field(
        "judged", description="with fewer than min_pairs fit pairs, whether G's blur and colour stay where the "
        "pre-fit left them during co-learning (its noise part always learns): 'judged' holds them when the "
        "pre-fitted G is at least few_pairs_hold_margin dB closer (PSNR-Y) than bicubic-down to the real LR of "
        "the camera's gate pairs, which it was not fitted on, and leaves them free otherwise, or without a gate pair "
        "that is an exact pair of the profile's scale. "
        "On RealSR with 2 fit pairs, holding lifted Canon's student 0.84 dB and dropped Nikon's 0.69 dB on the "
        "selection split; their pre-fits were +2.3 and -0.3 dB from bicubic-down there (docs/benchmarks.md)")
    few_pairs_hold_margin: float = Field(
        1.0, ge=0, allow_inf_nan=False, strict=True, description="dB PSNR-Y by which the pre-fitted G must beat bicubic-down on the gate pairs for "
        "few_pairs_hold 'judged' to hold it; chosen inside the gap between RealSR's pre-fits on 1 and 2 pairs "
        "(+2.3 to +2.6 dB on Canon, -0.3 to +0.2 dB on Nikon, selection split)")
    colour_transform: bool = Field(
        True, description="give a colour camera's G a colour matrix and offset when it has fit pairs: a pair "
        "shows the camera's colour response on the very scene, which unpaired statistics cannot")


class ColearnConfig(_Strict):
    """The co-learning stage: student U, downsampler G, D_HR, D_LR, teacher distillation."""

    train: OptimConfig = OptimConfig(lr=5e-5, warmup_steps=20)
    downsampler_lr: float = Field(1e-4, gt=0)
    camera_params_lr: float = Field(
        2e-3, gt=0, description="learning rate of G's colour and noise parameters (a few scalars: log noise levels, "
        "a 3x3 noise kernel, a colour matrix); at downsampler_lr a noise level could move only ~10 % in 1000 steps"
    )
    noise_fit_every: int = Field(
        0, ge=0, description="every N co-learning steps, starting at the first, scale G's whole sensor noise by the "
        "factor that best matches the field camera's flat-region noise on a fixed calibration set (a 1-D search, "
        "sr/train/noise_fit.py), instead of leaving the level to gradient steps that move it at most ~camera_params_lr "
        "in log per step (only a camera-model G has a noise level: ignored otherwise); 0: off"
    )
    noise_fit_crops: int = Field(128, ge=8, description="HR and field crops (training size) in the noise fit's "
                                 "calibration set")
    discriminator_lr: float = Field(1e-4, gt=0)
    discriminator_betas: tuple[float, float] = (0.5, 0.999)
    gan_loss: Literal["hinge", "nonsaturating"] = "hinge"
    teacher_steps: int | None = Field(
        None, ge=1, description="teacher sampler steps for distillation (None: all T; fewer: evenly spaced)"
    )
    weights: LossWeights = LossWeights()
    start_noise_scale: float = Field(
        0.0, ge=0, description="scale of the start noise eps of student and teacher: 0 distils the path that "
        "is served (inference starts at the prior's mean for fidelity); 1 is SinSR's eps ~ N(0, I)"
    )
    input_sharpness_spread: float = Field(
        0.0, ge=0, le=1, description="the student's training LR is G's LR moved towards the sharper bicubic "
        "down(x) by a per-crop share drawn from U(0, spread): one camera model has one blur, but a camera's "
        "images differ in focus, and a student that saw only G's blur over-sharpens the sharper ones. 0: off"
    )
    rec_grad_to_downsampler: bool = Field(
        False, description="let the HR-side losses (rec, LPIPS, distill, adv_hr) reach G through U; off, "
        "U sees y_hat detached, so G cannot learn to hide information for U"
    )
    struct_sigma: float = Field(1.0, ge=0, description="Gaussian sigma (LR pixels) of L_struct's lowpass")
    d_lr_highpass: bool = Field(
        True, description="frequency separation: D_LR judges only y - lowpass(y, struct_sigma), the band that "
        "L_struct leaves free, so it judges the camera's blur, noise and compression rather than scene content "
        "or colour"
    )
    init_from_teacher: bool = Field(
        True, description="start the student from the teacher's weights (SinSR); false trains it from scratch "
        "(the plain single-step baseline)"
    )
    use_downsampler: bool = Field(True, description="false: fixed degradation, no G, D_LR, L_struct or L_cyc_LR")
    fixed_degradation: Literal["bicubic", "synthetic"] = Field(
        "bicubic", description="the LR when use_downsampler is false: down(x), or the profile's degradation"
    )
    downsampler: DownsamplerConfig = DownsamplerConfig()
    paired_fit: PairedFitConfig = PairedFitConfig()
    d_hr: DiscriminatorConfig = DiscriminatorConfig(num_downsamples=3)
    d_lr: DiscriminatorConfig = DiscriminatorConfig(num_downsamples=2)

    @property
    def fits_noise_level(self) -> bool:
        """Whether G's noise level is fitted to the field camera's by search (only a camera G has one)."""
        return self.noise_fit_every > 0 and self.use_downsampler and self.downsampler.noise_model == "camera"

    @property
    def compresses_like_the_camera(self) -> bool:
        """Whether G gets the field camera's JPEG stage (when the camera's uploads are JPEG): only a camera
        G has the noise the compression follows."""
        return self.use_downsampler and self.downsampler.jpeg_stage and self.downsampler.noise_model == "camera"


class ProfileError(ValueError):
    """A profile file that is missing, unreadable or invalid; the message says which and why."""


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_profile_mapping(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The profile's mapping; ``base: OTHER.yaml`` (relative to the file) is loaded first and overridden
    key by key, so an ablation profile states only what it changes."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"profile {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must hold a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ProfileError(f"profile {path} has a circular base: {base_path}")
    return _deep_merge(_read_profile_mapping(base_path, (*seen, path.resolve())), raw)


class Profile(_Strict):
    name: str
    scale: int = Field(4, ge=2, le=8)
    net: NetConfig = NetConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    degradation: DegradationConfig = DegradationConfig()
    teacher: OptimConfig = OptimConfig()
    colearn: ColearnConfig = ColearnConfig()

    @model_validator(mode="after")
    def _check(self) -> "Profile":
        multiple = self.scale * 2 ** (len(self.net.block_out_channels) - 1)
        if self.teacher.patch_size % multiple:
            raise ValueError(f"teacher.patch_size must be a multiple of {multiple} (scale x 2^(levels-1))")
        if self.degradation.scale != self.scale:
            raise ValueError("degradation.scale must equal the profile's scale")
        return self

    @model_validator(mode="after")
    def _check_colearn(self) -> "Profile":
        multiple = self.scale * 2 ** (len(self.net.block_out_channels) - 1)
        if self.colearn.train.patch_size % multiple:
            raise ValueError(f"colearn.train.patch_size must be a multiple of {multiple} (scale x 2^(levels-1))")
        if self.colearn.paired_fit.patch_size % self.scale:
            raise ValueError(f"colearn.paired_fit.patch_size must be a multiple of the scale {self.scale}")
        steps = self.colearn.teacher_steps
        if steps is not None and steps > self.diffusion.num_steps:
            raise ValueError(f"colearn.teacher_steps ({steps}) exceeds diffusion.num_steps ({self.diffusion.num_steps})")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Profile":
        path = Path(path)
        raw = _read_profile_mapping(path)
        raw.setdefault("name", path.stem)
        # The degradation's scale follows the profile's unless set explicitly.
        if "scale" in raw:
            raw.setdefault("degradation", {}).setdefault("scale", raw["scale"])
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ProfileError(f"profile {path} is invalid:\n{exc}") from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def for_camera(self, camera: str, choice: dict | None) -> "Profile":
        """This profile with one field camera's camera-model choices (``camera_model`` in the camera
        registry: blur_model, colour_transform, jpeg_stage, colour_match, noise_match, noise_fit_every; None or
        empty: unchanged).
        A camera that turns the colour transform on without a colour_match weight, on a profile whose
        weight is 0, gets 1.0: otherwise nothing but the LR cycle would train the transform."""
        choice = {k: v for k, v in (choice or {}).items() if v is not None}
        if not choice:
            return self
        d = self.to_dict()
        downsampler, weights = d["colearn"]["downsampler"], d["colearn"]["weights"]
        for key in ("blur_model", "colour_transform", "jpeg_stage"):
            if key in choice:
                downsampler[key] = choice[key]
        for key in ("colour_match", "noise_match"):
            if key in choice:
                weights[key] = choice[key]
        if "noise_fit_every" in choice:
            d["colearn"]["noise_fit_every"] = choice["noise_fit_every"]
        if choice.get("colour_transform") and "colour_match" not in choice and not weights["colour_match"]:
            weights["colour_match"] = 1.0
        try:
            return Profile.model_validate(d)
        except ValidationError as exc:
            raise ProfileError(f"camera {camera!r}: its camera_model does not fit profile {self.name!r}:\n{exc}") from None

    def fixed_degradation_challenger(self) -> "Profile":
        """The same profile with the fixed (bicubic) degradation instead of a learned camera model: the
        student the promotion gate holds every co-learned student against, and the
        bench's no-downsampler ablation."""
        d = self.to_dict()
        d["colearn"].update(use_downsampler=False, fixed_degradation="bicubic")
        d["name"] = f"{self.name}-fixed-degradation"
        return Profile.model_validate(d)
