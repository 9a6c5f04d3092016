"""Co-learning of the single-step student U and the learnable downsampler G as a training stage
(method.md sections 2-4).

One iteration, given HR crops x and unpaired field LR crops y_r:
1. y_hat = G(x, eps')                      (or a fixed degradation in the ablation without G)
2. x_hat = U(y_hat, eps), one evaluation at t = T; x_tilde = the frozen teacher's deterministic
   sampler from the same eps, without gradient
3. update D_LR (y_r real, y_hat fake) and D_HR (x real, x_hat fake) on detached inputs
4. update U and G together on the weighted terms of ``LossWeights`` (0 skips a term)
5. EMA of U: the copy that is saved and served.

A field camera with fit pairs (registered HR/LR shots, sr/train/paired_fit.py) first has G pre-fitted on them,
then keeps the paired term in step 4 with G's blur held at its pre-fit (``paired_fit.blur_lr_scale``); without
fit pairs nothing of that runs.

``CoLearner`` is that iteration; ``ColearnStage`` feeds it to the shared loop and writes two model
folders, the EMA student and the downsampler, where its caller says; ``train_colearn`` runs it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from sr_pipeline.sr.models.checkpoints import link_path, load_sr_model
from sr_pipeline.sr.train.profile import ColearnConfig, Profile
from sr_pipeline.sr.models.diffusion import ResShiftSchedule
from sr_pipeline.sr.models.discriminators import PatchDiscriminator
from sr_pipeline.sr.models.downsampler import LearnedDownsampler
from sr_pipeline.sr.images.tensors import downsample, grey_rgb, is_grey, upsample
from sr_pipeline.sr.images.jpeg_settings import JpegSettings
from sr_pipeline.sr.train.losses import (
    LPIPSLoss,
    colour_match,
    d_accuracy,
    d_adv_loss,
    g_adv_loss,
    l1,
    lowpass,
    mse,
    noise_match,
    sharpness_match,
    weighted_sum,
)
from sr_pipeline.sr.models.upsampler import SRUNet
from sr_pipeline.sr.train.noise_fit import fit_noise_level
from sr_pipeline.sr.train.paired_fit import (
    FitPair,
    PairedCrops,
    check_fit_pair_registration,
    few_pairs_warning,
    prefit_realism,
    paired_loss,
    prefit_downsampler,
    registration_warning,
)
from sr_pipeline.sr.train.stages.base import ModelOutput, Stage
from sr_pipeline.sr.train.timing import StepTimer
from sr_pipeline.sr.train.loop import TrainResult, run_stage
from sr_pipeline.sr.train.shared import EMA, check_finite, warmup_lambda

# Terms that exist only with a learnable downsampler (they train G or judge its output).
_G_ONLY_TERMS = ("adv_lr", "struct", "cyc_lr", "noise_match", "sharpness_match", "colour_match", "paired")


@contextlib.contextmanager
def frozen(*models: torch.nn.Module | None) -> Iterator[None]:
    """No gradients for these models' weights and eval mode (spectral norm's power iteration paused)."""
    present = [(m, m.training) for m in models if m is not None]
    for m, _ in present:
        m.requires_grad_(False).eval()
    try:
        yield
    finally:
        for m, was_training in present:
            m.requires_grad_(True).train(was_training)


# ---- the co-learner -----------------------------------------------------------------------------------

def effective_weights(cfg: ColearnConfig, lpips_available: bool, has_fit_pairs: bool = False) -> dict[str, float]:
    """The profile's weights with the terms that cannot run here set to 0 (no G; no LPIPS weights; no fit pairs)."""
    w = cfg.weights.model_dump()
    if not cfg.use_downsampler:
        for k in _G_ONLY_TERMS:
            w[k] = 0.0
    if not lpips_available:
        w["lpips"] = 0.0
    if not has_fit_pairs:
        w["paired"] = 0.0
    if not any(w.values()):
        raise ValueError("every generator loss weight is 0: nothing would train the student")
    return w


def student_step(net: torch.nn.Module, schedule: ResShiftSchedule, y: torch.Tensor, eps: torch.Tensor,
                 scale: int) -> torch.Tensor:
    """U(y, eps): one network evaluation at t = T from x_T = up(y) + kappa sqrt(eta_T) eps."""
    up_y = upsample(y, scale)
    return schedule.predict_x0(net, schedule.prior_sample(up_y, eps), up_y, schedule.num_steps)


class CoLearner:
    """The nets, optimisers and losses of one co-learning run, and its iteration in method.md's order."""

    def __init__(self, profile: Profile, teacher: SRUNet, schedule: ResShiftSchedule, accelerator,
                 lpips: LPIPSLoss | None = None, timer: StepTimer | None = None, grey: bool = False,
                 jpeg: JpegSettings | None = None, has_fit_pairs: bool = False, blur_lr_scale: float = 1.0):
        cfg = profile.colearn
        self.cfg, self.scale, self.schedule, self.accelerator = cfg, profile.scale, schedule, accelerator
        self.device = accelerator.device
        self.timer = timer or StepTimer(self.device)
        self.weights = effective_weights(cfg, lpips is not None, has_fit_pairs)
        self.lpips = lpips.to(self.device) if lpips is not None and self.weights["lpips"] > 0 else None
        self.teacher_steps = cfg.teacher_steps or schedule.num_steps

        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        student = SRUNet.from_config(teacher.config)
        if cfg.init_from_teacher:
            student.load_state_dict(teacher.state_dict())
        student.train().requires_grad_(True)
        g = d_hr = d_lr = None
        if cfg.use_downsampler:
            dc = cfg.downsampler
            # fit pairs show the camera's colour response on the very scene: a colour camera's G may learn it
            colour = (dc.colour_transform or (has_fit_pairs and cfg.paired_fit.colour_transform
                                              and dc.noise_model == "camera")) and not grey
            g = LearnedDownsampler(scale=profile.scale, channels=dc.channels, num_blocks=dc.num_blocks,
                                   norm_num_groups=dc.norm_num_groups, kappa=dc.kappa,
                                   noise_model=dc.noise_model, colour_transform=colour,
                                   grey=grey, blur_model=dc.blur_model,
                                   jpeg=jpeg.to_config() if jpeg is not None else None)
        if self.weights["adv_hr"] > 0:
            d_hr = PatchDiscriminator(**cfg.d_hr.model_dump())
        if self.weights["adv_lr"] > 0:
            d_lr = PatchDiscriminator(**cfg.d_lr.model_dump())
        self.ema = EMA(student, cfg.train.ema_decay, cfg.train.ema_warmup)

        groups = [{"params": list(student.parameters()), "lr": cfg.train.lr}]
        self._g_groups: dict[str, list[int]] = {"blur": [], "colour": []}  # their indices, for hold_g
        if g is not None:
            # with enough fit pairs the pre-fit pinned G's blur; blur_lr_scale slows (0: holds) it against the
            # unpaired pull (ColearnStage decides)
            blur = {id(p) for p in g.blur_parameters()}
            colour = {id(p) for p in g.colour_parameters()}
            for part, params, lr in (
                    ("blur", g.network_parameters(), cfg.downsampler_lr * blur_lr_scale),  # none with a kernel blur
                    ("noise", [p for p in g.camera_parameters() if id(p) not in blur | colour], cfg.camera_params_lr),
                    ("colour", [p for p in g.camera_parameters() if id(p) in colour], cfg.camera_params_lr),
                    ("blur", [p for p in g.camera_parameters() if id(p) in blur], cfg.camera_params_lr * blur_lr_scale)):
                if params:
                    self._g_groups.setdefault(part, []).append(len(groups))
                    groups.append({"params": params, "lr": lr})
        opt_gen = torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(opt_gen, warmup_lambda(cfg.train.warmup_steps))
        discs = [d for d in (d_hr, d_lr) if d is not None]
        opt_disc = (torch.optim.Adam([p for d in discs for p in d.parameters()], lr=cfg.discriminator_lr,
                                     betas=cfg.discriminator_betas) if discs else None)

        prepared = accelerator.prepare(*[m for m in (student, g, d_hr, d_lr, opt_gen, opt_disc) if m is not None])
        it = iter(prepared if isinstance(prepared, (tuple, list)) else [prepared])
        self.student = next(it)
        self.downsampler = next(it) if g is not None else None
        self.d_hr = next(it) if d_hr is not None else None
        self.d_lr = next(it) if d_lr is not None else None
        self.opt_gen = next(it)
        self.opt_disc = next(it) if opt_disc is not None else None
        self.ema.model.to(self.device)

    def hold_g(self) -> None:
        """Hold G's blur and colour where they are (the pre-fit) from now on: their learning rates become 0, in the
        optimiser and in the warm-up schedule that rescales them each step; G's noise part still learns."""
        for i in self._g_groups["blur"] + self._g_groups["colour"]:
            self.opt_gen.param_groups[i]["lr"] = 0.0
            self.lr_sched.base_lrs[i] = 0.0

    # -- helpers
    def unwrap(self, model: torch.nn.Module | None) -> torch.nn.Module | None:
        return None if model is None else self.accelerator.unwrap_model(model)

    def lr_band(self, y: torch.Tensor) -> torch.Tensor:
        """What D_LR sees of an LR image: all of it, or its high band when ``d_lr_highpass`` is set."""
        return y - lowpass(y, self.cfg.struct_sigma) if self.cfg.d_lr_highpass else y

    def _gen_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.opt_gen.param_groups for p in g["params"]]

    # -- steps 1 and 2
    def generate(self, x: torch.Tensor, y_fixed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """y_hat (G's LR of x, or the fixed LR), its structure part (what L_struct judges), x_hat = U(y_hat, eps)
        and the teacher's x_tilde."""
        acc = self.accelerator
        parts = None
        with self.timer("downsampler"), acc.autocast():
            if self.downsampler is not None:
                noise = torch.randn(self.unwrap(self.downsampler).lr_shape(x), device=x.device)
                parts = self.downsampler(x, noise, return_parts=True)
                y_hat = parts.lr
            elif y_fixed is not None:
                y_hat = y_fixed
            else:
                y_hat = downsample(x, self.scale)
        y_in = y_hat if self.cfg.rec_grad_to_downsampler else y_hat.detach()
        if self.cfg.input_sharpness_spread > 0 and self.downsampler is not None:
            share = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * self.cfg.input_sharpness_spread
            y_in = y_in + share * (downsample(x, self.scale) - y_in)
        eps = torch.randn_like(x) * self.cfg.start_noise_scale
        with self.timer("student"), acc.autocast():
            x_hat = student_step(self.student, self.schedule, y_in, eps, self.scale)
        out = {"y_hat": y_hat, "y_in": y_in, "eps": eps, "x_hat": x_hat}
        if parts is not None:
            out["y_struct"] = parts.structure
            # The matching terms train only their own part: the noise level through the noise alone, the
            # colour response on the detached structure, so neither can blur or move the scene.
            out["y_noise_view"] = y_hat if parts.noise is None else (y_hat - parts.noise).detach() + parts.noise
            out["y_blur_view"] = y_hat if parts.noise is None else y_hat - parts.noise + parts.noise.detach()
            out["y_colour_view"] = self.unwrap(self.downsampler).colour(parts.structure.detach())
        if self.weights["distill"] > 0 or self.weights["inverse"] > 0:
            with self.timer("teacher"), torch.no_grad(), acc.autocast():
                out["x_tilde"] = self.schedule.sample(self.teacher, upsample(y_in.detach(), self.scale), eps,
                                                      num_inference_steps=self.teacher_steps, deterministic=True)
        return out

    # -- step 3
    def discriminator_step(self, x: torch.Tensor, y_r: torch.Tensor | None, gen: dict[str, torch.Tensor],
                           step: int) -> dict[str, float]:
        """Update D_HR on (x, x_hat) and D_LR on (y_r, y_hat), fakes detached; U and G are not touched."""
        if self.opt_disc is None:
            return {}
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, float] = {}
        kind = self.cfg.gan_loss
        with self.timer("discriminators"):
            for d in (self.d_hr, self.d_lr):
                if d is not None:
                    d.requires_grad_(True).train()
            with self.accelerator.autocast():
                if self.d_hr is not None:
                    real, fake = self.d_hr(x), self.d_hr(gen["x_hat"].detach())
                    losses["d_hr"] = d_adv_loss(real, fake, kind)
                    stats["acc_d_hr"] = d_accuracy(real, fake)
                if self.d_lr is not None:
                    real, fake = self.d_lr(self.lr_band(y_r)), self.d_lr(self.lr_band(gen["y_hat"].detach()))
                    losses["d_lr"] = d_adv_loss(real, fake, kind)
                    stats["acc_d_lr"] = d_accuracy(real, fake)
            check_finite(losses, step)
            total = sum(losses.values())
            self.opt_disc.zero_grad(set_to_none=True)
            self.accelerator.backward(total)
            params = [p for g in self.opt_disc.param_groups for p in g["params"]]
            self.accelerator.clip_grad_norm_(params, self.cfg.train.grad_clip)
            self.opt_disc.step()
        return {**{f"loss_{k}": float(v.detach()) for k, v in losses.items()}, **stats}

    # -- step 4
    def generator_step(self, x: torch.Tensor, y_r: torch.Tensor | None, gen: dict[str, torch.Tensor],
                       step: int, pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """Update U and G on the weighted terms (``pairs``: a batch of the fit pairs' aligned HR and real LR
        crops, for the paired term); the discriminators are frozen and unchanged."""
        acc, sched, s, kind = self.accelerator, self.schedule, self.scale, self.cfg.gan_loss
        x_hat, y_hat = gen["x_hat"], gen["y_hat"]
        d_hr, d_lr = self.unwrap(self.d_hr), self.unwrap(self.d_lr)
        T = sched.num_steps

        def cyc_lr() -> torch.Tensor:
            eps_r = torch.randn(y_r.shape[0], 3, *(n * s for n in y_r.shape[-2:]), device=y_r.device)
            x_r = student_step(self.student, sched, y_r, eps_r * self.cfg.start_noise_scale, s)
            return l1(self.downsampler(x_r, None), y_r)

        def inverse() -> torch.Tensor:
            # SinSR: the t = 0 call maps the teacher's x0 back to the x_T it started from.
            up_y = upsample(gen["y_in"], s)
            x_T = sched.prior_sample(up_y, gen["eps"])
            return mse(sched.predict_x0(self.student, gen["x_tilde"], up_y, 0), x_T)

        def consistency() -> torch.Tensor:
            # SinSR: invert the ground truth with the t = 0 call (no gradient), then the t = T call must return it.
            up_y = upsample(gen["y_in"], s)
            with torch.no_grad():
                x_T = sched.predict_x0(self.student, x, up_y, 0)
            return mse(sched.predict_x0(self.student, x_T, up_y, T), x)

        terms: dict[str, Callable[[], torch.Tensor]] = {
            "rec": lambda: l1(x_hat, x),
            "lpips": lambda: self.lpips(x_hat, x),
            "distill": lambda: mse(x_hat, gen["x_tilde"]),
            "adv_hr": lambda: g_adv_loss(d_hr(x_hat), kind),
            "adv_lr": lambda: g_adv_loss(d_lr(self.lr_band(y_hat)), kind),
            "struct": lambda: l1(lowpass(gen["y_struct"], self.cfg.struct_sigma),
                                 lowpass(downsample(x, s), self.cfg.struct_sigma)),
            "noise_match": lambda: noise_match(gen["y_noise_view"], y_r, self.cfg.struct_sigma),
            "sharpness_match": lambda: sharpness_match(gen["y_blur_view"], y_r),
            "colour_match": lambda: colour_match(gen["y_colour_view"], y_r, self.cfg.struct_sigma),
            "cyc_lr": cyc_lr,
            "inverse": inverse,
            "consistency": consistency,
            "paired": lambda: paired_loss(self.unwrap(self.downsampler), *pairs, self.cfg.struct_sigma,
                                          self.cfg.paired_fit.noise, call=self.downsampler)[0],
        }
        with frozen(self.d_hr, self.d_lr):
            with self.timer("generator_losses"), acc.autocast():
                total, values = weighted_sum(self.weights, terms)
            check_finite({**values, "total": total}, step)
            with self.timer("generator_update"):
                self.opt_gen.zero_grad(set_to_none=True)
                acc.backward(total)
                acc.clip_grad_norm_(self._gen_params(), self.cfg.train.grad_clip)
                self.opt_gen.step()
                self.lr_sched.step()
        return {"loss_total": float(total.detach()), **{f"loss_{k}": float(v.detach()) for k, v in values.items()}}

    # -- one whole iteration (steps 1-5)
    def iteration(self, x: torch.Tensor, y_r: torch.Tensor | None, y_fixed: torch.Tensor | None, step: int,
                  pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        gen = self.generate(x, y_fixed)
        row = self.discriminator_step(x, y_r, gen, step)
        row.update(self.generator_step(x, y_r, gen, step, pairs))
        with self.timer("ema"):
            self.ema.update(self.unwrap(self.student), step)
        self.timer.steps += 1
        return row


def load_lpips_loss(weight: float, device: torch.device) -> tuple[LPIPSLoss | None, str]:
    """LPIPS with the real AlexNet weights, or None and the reason (never a random backbone)."""
    if weight <= 0:
        return None, "weight 0"
    from sr_pipeline.sr.judge.lpips_weights import load_lpips

    metric = load_lpips(str(device))
    if not getattr(metric, "available", False):
        return None, f"unavailable: {metric.reason}"
    return LPIPSLoss(metric.net), "alexnet"


def _endless(loader) -> Iterator:
    while True:
        yield from loader


class ColearnStage(Stage):
    """Co-learn U and G from a frozen teacher; writes a ``student`` folder and, with G, a ``downsampler`` one."""

    def __init__(self, profile: Profile, teacher_dir: Path, hr_images: list[np.ndarray],
                 field_lr_images: list[np.ndarray], student_out: Path, downsampler_out: Path | None = None, *,
                 image_ids: list[str] | None = None, field_image_ids: list[str] | None = None,
                 camera: str | None = None, challenger: bool = False, field_jpeg: JpegSettings | None = None,
                 fit_pairs: list[FitPair] | None = None, fit_pair_names: list[str] | None = None,
                 unpaired_twin_of: str | None = None, check_pairs: list[FitPair] | None = None):
        cfg = profile.colearn
        if not hr_images:
            raise ValueError("no HR reference images to co-learn on")
        self.needs_field = cfg.use_downsampler and (cfg.weights.adv_lr > 0 or cfg.weights.cyc_lr > 0)
        # A grey field camera: its student learns grey from grey (HR references are reduced to
        # their luma) and its G makes grey LR, so nothing downstream invents colour.
        self.grey = bool(field_lr_images) and all(is_grey(im) for im in field_lr_images)
        if self.grey:
            hr_images = [grey_rgb(im) for im in hr_images]
        # The field camera's fit pairs pin G (sr/train/paired_fit.py); without G (the fixed-degradation challenger)
        # they have nothing to pin.
        fit_pairs = list(fit_pairs or []) if cfg.use_downsampler else []
        # one name per fit pair, in messages and training.json (unnamed pairs by their position from 1)
        names = list(fit_pair_names or [])[: len(fit_pairs)]
        names += [f"#{i + 1}" for i in range(len(names), len(fit_pairs))]
        odd = [n for n, (_, lr) in zip(names, fit_pairs) if is_grey(lr) != self.grey]
        if odd:  # a neutral target can look grey to a colour camera, so this is said, not refused
            print(f"warning: fit pair(s) {', '.join(odd)}: the LR is {'colour' if self.grey else 'grey'} but the "
                  f"camera's field images are {'grey' if self.grey else 'colour'}; check they are this camera's "
                  "shots, since G's colour response is fitted on them", flush=True)
        if self.grey:
            fit_pairs = [(grey_rgb(hr), lr) for hr, lr in fit_pairs]
        # another scene is left out of the fit; an offset pair is named and kept (one of five RealSR pairs 2 pixels
        # off moved the student by less than the seed spread, and leaving it out would drop the count below
        # min_pairs: docs/benchmarks.md)
        self.registration = check_fit_pair_registration(fit_pairs, profile.scale, names) if fit_pairs else None
        if self.registration and self.registration.foreign:
            kept = [i for i, n in enumerate(names) if n not in self.registration.foreign]
            fit_pairs, names = [fit_pairs[i] for i in kept], [names[i] for i in kept]
        if self.registration and self.registration.unchecked:
            print("note: fit pair(s) not checked for registration: " + "; ".join(
                f"{n}: {why}" for n, why in self.registration.unchecked.items()), flush=True)
        # a G that compresses like the camera is compared with the real LR on the camera's JPEG block grid
        grid = 8 * max(field_jpeg.factors) if field_jpeg is not None and cfg.compresses_like_the_camera else 1
        self.paired = (PairedCrops(fit_pairs, cfg.paired_fit.patch_size, profile.scale, cfg.train.seed, grid,
                                   names) if fit_pairs else None)
        self.fit_pair_names = names if fit_pairs else []
        self.fit_pairs_warning = "; ".join(filter(None, (
            registration_warning(self.registration, len(fit_pairs)) if self.registration else None,
            few_pairs_warning(len(fit_pairs), cfg.paired_fit.min_pairs)))) or None
        # G's blur is held after the pre-fit on enough pairs; below min_pairs, blur and colour are held only where
        # the pre-fit is clearly right on pairs it did not see (few_pairs_hold, decided in build)
        enough = bool(fit_pairs) and len(fit_pairs) >= cfg.paired_fit.min_pairs
        self.blur_lr_scale = cfg.paired_fit.blur_lr_scale if enough else 1.0
        self.few_pairs = bool(fit_pairs) and not enough
        # the camera's gate pairs (never fitted on): where a pre-fit on few pairs is judged
        self.check_pairs = [(grey_rgb(hr), lr) if self.grey else (hr, lr) for hr, lr in check_pairs or []]
        self.few_pairs_hold: dict | None = None
        if self.fit_pairs_warning:
            print(f"warning: {self.fit_pairs_warning}", flush=True)
        self.prefit: dict | None = None
        if self.needs_field and not field_lr_images:
            raise ValueError("no field LR images: D_LR and the LR cycle need them "
                             "(or set colearn.use_downsampler: false)")
        if cfg.use_downsampler and downsampler_out is None:
            raise ValueError("the profile trains a downsampler: say where its folder goes (downsampler_out)")
        self.profile, self.cfg, self.opt = profile, cfg, cfg.train
        self.teacher_dir = Path(teacher_dir)
        self.teacher = load_sr_model(self.teacher_dir)
        if self.teacher.net.config.scale != profile.scale:
            raise ValueError(f"the teacher upscales x{self.teacher.net.config.scale}, the profile x{profile.scale}")
        self.hr_images, self.field_lr_images = hr_images, field_lr_images
        self.image_ids, self.field_image_ids = image_ids or [], field_image_ids or []
        self.camera = camera  # the field camera whose images these are (recorded, not used in training)
        self.unpaired_twin_of = unpaired_twin_of  # the student with fit pairs this one (trained without) is the twin of
        self.challenger = challenger  # the gate's fixed-degradation challenger (recorded: served per camera only if it wins)
        # The field camera's JPEG settings (read from its uploads), which G compresses its LR with.
        self.field_jpeg = field_jpeg
        self.jpeg_stage = field_jpeg is not None and cfg.compresses_like_the_camera
        self.student_out = Path(student_out)
        self.downsampler_out = Path(downsampler_out) if cfg.use_downsampler else None

    def build(self, accelerator) -> None:
        lpips, self.lpips_status = load_lpips_loss(self.cfg.weights.lpips, accelerator.device)
        self.learner = CoLearner(self.profile, self.teacher.net, self.teacher.schedule, accelerator, lpips,
                                 grey=self.grey and self.cfg.downsampler.noise_model == "camera",
                                 jpeg=self.field_jpeg if self.jpeg_stage else None,
                                 has_fit_pairs=self.paired is not None, blur_lr_scale=self.blur_lr_scale)
        self.accelerator = accelerator
        pf = self.cfg.paired_fit
        if self.paired is not None and pf.prefit_steps > 0:
            # the pinned start (a resumed run then loads its checkpointed G over it)
            with self.learner.timer("paired_prefit"):
                self.prefit = prefit_downsampler(self.learner.unwrap(self.learner.downsampler), self.paired,
                                                 pf.prefit_steps, pf.prefit_lr, self.cfg.camera_params_lr,
                                                 pf.batch_size, self.cfg.struct_sigma, pf.noise, accelerator.device)
            print(f"paired pre-fit of G on {len(self.paired.pairs)} fit pairs: {self.prefit}", flush=True)
        if self.few_pairs:
            self.few_pairs_hold = self._judge_few_pairs_hold()
            if self.few_pairs_hold["held"]:
                self.learner.hold_g()
                self.blur_lr_scale = 0.0  # as training.json records it
            print(f"fewer fit pairs than min_pairs: {self.few_pairs_hold['why']}", flush=True)
            # what was decided goes with the warning the asset and the report show
            self.fit_pairs_warning = "; ".join(filter(None, (self.fit_pairs_warning, self.few_pairs_hold["why"])))
        self.noise_calibration = self._noise_calibration_set() if self.cfg.fits_noise_level else None
        self.noise_fits: list[dict] = []

    def _judge_few_pairs_hold(self) -> dict:
        """Whether G's blur and colour stay where the pre-fit on fewer than ``min_pairs`` pairs left them
        (``paired_fit.few_pairs_hold``): ``judged`` holds them when the pre-fitted G is at least
        ``few_pairs_hold_margin`` dB closer than bicubic-down to the real LR of the camera's gate pairs. On RealSR
        (2 fit pairs, the selection split) holding lifted Canon's student by 0.84 dB, whose pre-fit was 2.3 dB closer,
        and dropped Nikon's by 0.69 dB, whose pre-fit was 0.3 dB further (docs/benchmarks.md)."""
        pf = self.cfg.paired_fit
        found = None
        if pf.few_pairs_hold == "judged" and self.check_pairs:
            found = prefit_realism(self.learner.unwrap(self.learner.downsampler), self.check_pairs, self.profile.scale)
        record = {"mode": pf.few_pairs_hold, "margin_needed_db": pf.few_pairs_hold_margin,
                  "g_psnr": None, "bicubic_psnr": None, "pairs": 0}
        if pf.few_pairs_hold != "judged":
            held = pf.few_pairs_hold == "always"
            why = f"G's blur and colour are {'held at the pre-fit' if held else 'free'} (few_pairs_hold: {pf.few_pairs_hold})"
        elif found is None:
            held = False
            why = "G's blur and colour are left free to co-learn: " + (
                "the camera has no gate pair to judge its pre-fit on" if not self.check_pairs
                else f"none of its gate pairs is an exact x{self.profile.scale} pair to judge its pre-fit on")
        else:
            held = found.margin >= pf.few_pairs_hold_margin
            record |= {"g_psnr": round(found.g_psnr, 3), "bicubic_psnr": round(found.bicubic_psnr, 3),
                       "pairs": found.pairs}
            why = (f"on the camera's {found.pairs} gate pair(s) the pre-fitted G is {found.g_psnr:.2f} dB PSNR-Y from the "
                   f"real LR against {found.bicubic_psnr:.2f} for bicubic-down ({found.margin:+.2f} dB; "
                   f"{pf.few_pairs_hold_margin:g} needed), so its blur and colour are "
                   + ("held at the pre-fit" if held else "left free to co-learn"))
        return record | {"held": held, "why": why}

    def _noise_calibration_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Fixed HR and field crops (training size, their own seed: the same on every process) for the noise fit."""
        from sr_pipeline.sr.data.datasets import HRCrops, UnpairedLR

        if not self.field_lr_images:
            return None
        n, patch, seed = self.cfg.noise_fit_crops, self.opt.patch_size, self.opt.seed * 1_000_003 + 1
        hr = HRCrops(self.hr_images, patch, seed)
        field = UnpairedLR(self.field_lr_images, patch // self.profile.scale, seed)
        device = self.accelerator.device
        return (torch.stack([hr[i] for i in range(n)]).to(device),
                torch.stack([field[i] for i in range(n)]).to(device))

    def checkpointed(self) -> list:
        return [self.learner.ema, self.learner.lr_sched, self.learner.timer]

    def batches(self, start: int) -> Iterator[tuple]:
        from sr_pipeline.sr.data.datasets import DegradedPairs, HRCrops, UnpairedLR, loader_for

        opt, cfg, acc = self.opt, self.cfg, self.accelerator
        # Every stream restarts at the sample the interrupted run would have drawn next.
        seed = opt.seed * 1_000_003
        if not cfg.use_downsampler and cfg.fixed_degradation == "synthetic":
            hr_data = DegradedPairs(self.hr_images, opt.patch_size, self.profile.degradation, seed)
        else:
            hr_data = HRCrops(self.hr_images, opt.patch_size, seed)
        hr_batches = _endless(acc.prepare(loader_for(hr_data, opt.batch_size, opt.num_workers, start)))
        lr_batches = None
        if self.needs_field:
            lr_data = UnpairedLR(self.field_lr_images, opt.patch_size // self.profile.scale, seed)
            lr_batches = _endless(acc.prepare(loader_for(lr_data, opt.batch_size, opt.num_workers, start)))
        timer = self.learner.timer
        while True:
            with timer("data"):
                batch = next(hr_batches)
                x, y_fixed = (batch["hr"], batch["lr"]) if isinstance(batch, dict) else (batch, None)
                y_r = next(lr_batches) if lr_batches is not None else None
            yield x, y_r, y_fixed

    def step(self, batch: tuple, step: int) -> dict[str, float]:
        x, y_r, y_fixed = batch
        pairs = None
        if self.paired is not None:
            with self.learner.timer("data"):
                pairs = tuple(t.to(self.accelerator.device)
                              for t in self.paired.batch(1_000_000 + step, self.cfg.paired_fit.batch_size))
        if self.noise_calibration is not None and (step - 1) % self.cfg.noise_fit_every == 0:
            with self.learner.timer("noise_fit"):
                fit = fit_noise_level(self.learner.unwrap(self.learner.downsampler), *self.noise_calibration,
                                      self.cfg.struct_sigma, seed=step)
            self.noise_fits.append({"step": step, "factor": round(fit.factor, 4),
                                    "term_before": round(fit.term_before, 6), "term_after": round(fit.term_after, 6),
                                    "applied": fit.applied})
        return self.learner.iteration(x, y_r, y_fixed, step, pairs)

    def info(self, history: list[dict]) -> dict:
        final = {k: v for k, v in history[-1].items() if k.startswith(("loss_", "acc_"))} if history else {}
        learner = self.learner
        return {
            # relative to the data root (sr/models/checkpoints.py link_path): a moved data root still finds it
            "teacher": {"path": link_path(self.teacher_dir, self.student_out),
                        "version": self.teacher.info.get("version")},
            "teacher_steps": learner.teacher_steps,
            "loss_weights": learner.weights,
            "lpips": self.lpips_status,
            "final_loss": final.get("loss_total", float("nan")),
            "final": final,
            "time_breakdown": learner.timer.breakdown(),
            "num_images": len(self.hr_images),
            "num_field_images": len(self.field_lr_images),
            "camera": self.camera,
            "challenger": self.challenger,
            "unpaired_twin_of": self.unpaired_twin_of,
            "grey_field_camera": self.grey,
            "field_jpeg": self.field_jpeg.describe() if self.field_jpeg is not None else None,
            "jpeg_stage": self.jpeg_stage,
            # each fit of G's noise level since this process started (a resumed run lists only its own)
            "noise_fits": self.noise_fits,
            # the fit pairs that pinned G (never the gate's) and what the pre-fit changed
            "fit_pairs": self.fit_pair_names,
            "paired_prefit": self.prefit,
            "fit_pairs_warning": self.fit_pairs_warning,
            # the registration check: another scene (left out), offset (kept), unchecked (too small or flat)
            "fit_pairs_registration": self.registration._asdict() if self.registration else None,
            "blur_lr_scale": self.blur_lr_scale,  # the share of its rate G's blur kept during co-learning
            # below min_pairs: whether G's blur and colour were held at the pre-fit, and the figures that decided it
            "few_pairs_hold": self.few_pairs_hold,
            "image_ids": self.image_ids,
            "field_image_ids": self.field_image_ids,
        }

    def outputs(self) -> list[ModelOutput]:
        def save_student(tmp: Path) -> None:
            self.learner.ema.model.save_pretrained(tmp)
            self.learner.schedule.save_config(tmp)

        g_dir = self.downsampler_out
        out = [ModelOutput("student", self.student_out, save_student,
                           {"kind": "student", "downsampler": link_path(g_dir, self.student_out) if g_dir else None})]
        if g_dir is not None:
            out.append(ModelOutput("downsampler", g_dir,
                                   lambda tmp: self.learner.unwrap(self.learner.downsampler).save_pretrained(tmp),
                                   {"kind": "downsampler", "student": link_path(self.student_out, g_dir)}))
        return out


def train_colearn(profile: Profile, teacher_dir: Path, hr_images: list[np.ndarray], field_lr_images: list[np.ndarray],
                  run_dir: Path, student_out: Path, downsampler_out: Path | None = None, *, resume: bool = False,
                  report: Callable[[dict], None] | None = None, stop_after: int | None = None,
                  image_ids: list[str] | None = None, field_image_ids: list[str] | None = None,
                  camera: str | None = None, challenger: bool = False,
                  field_jpeg: JpegSettings | None = None, fit_pairs: list[FitPair] | None = None,
                  fit_pair_names: list[str] | None = None, unpaired_twin_of: str | None = None,
                  check_pairs: list[FitPair] | None = None) -> TrainResult | None:
    """Co-learn (or resume) U and G into the given folders (the student's name is the version) on one
    field camera's images (``camera`` names it in training.json; ``field_jpeg``: its uploads' JPEG
    settings, see ColearnStage; ``fit_pairs``: its registered (HR, LR) fit pairs, which pin G, named by
    ``fit_pair_names``; ``unpaired_twin_of``: the version of the student with fit pairs that this run, without
    them, is the promotion gate's twin of; ``check_pairs``: the camera's gate pairs, never fitted on, on which a
    pre-fit on fewer than ``min_pairs`` fit pairs is judged); None when ``stop_after`` interrupts it on purpose."""
    stage = ColearnStage(profile, teacher_dir, hr_images, field_lr_images, student_out, downsampler_out,
                         image_ids=image_ids, field_image_ids=field_image_ids, camera=camera, challenger=challenger,
                         field_jpeg=field_jpeg, fit_pairs=fit_pairs, fit_pair_names=fit_pair_names,
                         unpaired_twin_of=unpaired_twin_of, check_pairs=check_pairs)
    return run_stage(stage, run_dir, resume=resume, report=report, stop_after=stop_after)
