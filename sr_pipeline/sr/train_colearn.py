"""Co-learn the single-step student U and the learnable downsampler G (method.md sections 2-4).

One iteration, given HR crops x and unpaired field LR crops y_r:
1. y_hat = G(x, eps')                      (or a fixed degradation in the ablation without G)
2. x_hat = U(y_hat, eps), one evaluation at t = T; x_tilde = the frozen teacher's deterministic
   sampler from the same eps, without gradient
3. update D_LR (y_r real, y_hat fake) and D_HR (x real, x_hat fake) on detached inputs
4. update U and G together on the weighted terms of ``LossWeights`` (0 skips a term)
5. EMA of U: the copy that is saved and served.

``train_colearn`` is the loop (accelerate, resumable, NaN guard, progress) and writes two model
folders, the EMA student and the downsampler; ``run_cli`` is ``sr-pipeline train colearn``;
``run_pipes_entry`` is the process the Dagster multi-asset launches.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from sr_pipeline.sr.checkpoints import load_sr_model, read_info
from sr_pipeline.sr.config import ColearnConfig, Profile, ProfileError
from sr_pipeline.sr.diffusion import ResShiftSchedule
from sr_pipeline.sr.discriminators import PatchDiscriminator
from sr_pipeline.sr.downsampler import LearnedDownsampler
from sr_pipeline.sr.imageops import downsample, upsample
from sr_pipeline.sr.losses import (
    LPIPSLoss,
    d_accuracy,
    d_adv_loss,
    g_adv_loss,
    l1,
    lowpass,
    mse,
    weighted_sum,
)
from sr_pipeline.sr.nets import SRUNet
from sr_pipeline.sr.training import (
    format_progress,
    EMA,
    Progress,
    RunState,
    check_finite,
    device_label,
    mixed_precision_for,
    new_version,
    save_model_dir,
    seed_everything,
    share_cpu_with_workers,
    warmup_lambda,
)

STUDENT_ASSET = "co_trained_student"
DOWNSAMPLER_ASSET = "learned_downsampler"
# Terms that exist only with a learnable downsampler (they train G or judge its output).
_G_ONLY_TERMS = ("adv_lr", "struct", "cyc_lr")


# ---- timing -----------------------------------------------------------------------------------------

class StepTimer:
    """Wall time per named section of a step (device synchronised), kept across resumes."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - t0

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Seconds per step and share of the measured time, per section."""
        total = sum(self.totals.values()) or 1.0
        n = max(self.steps, 1)
        return {k: {"s_per_step": v / n, "share": v / total} for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}

    def state_dict(self) -> dict:
        return {"totals": dict(self.totals), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.totals = defaultdict(float, state["totals"])
        self.steps = int(state["steps"])


def format_breakdown(breakdown: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} {v['s_per_step'] * 1000:.0f} ms ({100 * v['share']:.0f}%)" for k, v in breakdown.items())


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

def effective_weights(cfg: ColearnConfig, lpips_available: bool) -> dict[str, float]:
    """The profile's weights with the terms that cannot run here set to 0 (no G; no LPIPS weights)."""
    w = cfg.weights.model_dump()
    if not cfg.use_downsampler:
        for k in _G_ONLY_TERMS:
            w[k] = 0.0
    if not lpips_available:
        w["lpips"] = 0.0
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
                 lpips: LPIPSLoss | None = None, timer: StepTimer | None = None):
        cfg = profile.colearn
        self.cfg, self.scale, self.schedule, self.accelerator = cfg, profile.scale, schedule, accelerator
        self.device = accelerator.device
        self.timer = timer or StepTimer(self.device)
        self.weights = effective_weights(cfg, lpips is not None)
        self.lpips = lpips.to(self.device) if lpips is not None and self.weights["lpips"] > 0 else None
        self.teacher_steps = cfg.teacher_steps or schedule.num_steps

        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        student = SRUNet.from_config(teacher.config)
        student.load_state_dict(teacher.state_dict())
        student.train().requires_grad_(True)
        g = d_hr = d_lr = None
        if cfg.use_downsampler:
            dc = cfg.downsampler
            g = LearnedDownsampler(scale=profile.scale, channels=dc.channels, num_blocks=dc.num_blocks,
                                   norm_num_groups=dc.norm_num_groups, kappa=dc.kappa)
        if self.weights["adv_hr"] > 0:
            d_hr = PatchDiscriminator(**cfg.d_hr.model_dump())
        if self.weights["adv_lr"] > 0:
            d_lr = PatchDiscriminator(**cfg.d_lr.model_dump())
        self.ema = EMA(student, cfg.train.ema_decay)

        groups = [{"params": list(student.parameters()), "lr": cfg.train.lr}]
        if g is not None:
            groups.append({"params": list(g.parameters()), "lr": cfg.downsampler_lr})
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

    # -- helpers
    def unwrap(self, model: torch.nn.Module | None) -> torch.nn.Module | None:
        return None if model is None else self.accelerator.unwrap_model(model)

    def stateful(self) -> dict:
        objs = {"student": self.student, "ema": self.ema, "opt_gen": self.opt_gen, "lr_sched": self.lr_sched,
                "downsampler": self.downsampler, "d_hr": self.d_hr, "d_lr": self.d_lr,
                "opt_disc": self.opt_disc, "timer": self.timer}
        return {k: v for k, v in objs.items() if v is not None}

    def lr_band(self, y: torch.Tensor) -> torch.Tensor:
        """What D_LR sees of an LR image: all of it, or its high band when ``d_lr_highpass`` is set."""
        return y - lowpass(y, self.cfg.struct_sigma) if self.cfg.d_lr_highpass else y

    def _gen_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.opt_gen.param_groups for p in g["params"]]

    # -- steps 1 and 2
    def generate(self, x: torch.Tensor, y_fixed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """y_hat (G's LR of x, or the fixed LR), x_hat = U(y_hat, eps) and the teacher's x_tilde."""
        acc = self.accelerator
        with self.timer("downsampler"), acc.autocast():
            if self.downsampler is not None:
                y_hat = self.downsampler(x, torch.randn(self.unwrap(self.downsampler).lr_shape(x), device=x.device))
            elif y_fixed is not None:
                y_hat = y_fixed
            else:
                y_hat = downsample(x, self.scale)
        y_in = y_hat if self.cfg.rec_grad_to_downsampler else y_hat.detach()
        eps = torch.randn_like(x) * self.cfg.start_noise_scale
        with self.timer("student"), acc.autocast():
            x_hat = student_step(self.student, self.schedule, y_in, eps, self.scale)
        out = {"y_hat": y_hat, "y_in": y_in, "eps": eps, "x_hat": x_hat}
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
                       step: int) -> dict[str, float]:
        """Update U and G on the weighted terms; the discriminators are frozen and unchanged."""
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
            "struct": lambda: l1(lowpass(y_hat, self.cfg.struct_sigma), lowpass(downsample(x, s), self.cfg.struct_sigma)),
            "cyc_lr": cyc_lr,
            "inverse": inverse,
            "consistency": consistency,
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
    def iteration(self, x: torch.Tensor, y_r: torch.Tensor | None, y_fixed: torch.Tensor | None, step: int) -> dict[str, float]:
        gen = self.generate(x, y_fixed)
        row = self.discriminator_step(x, y_r, gen, step)
        row.update(self.generator_step(x, y_r, gen, step))
        with self.timer("ema"):
            self.ema.update(self.unwrap(self.student), step)
        self.timer.steps += 1
        return row


# ---- the loop ---------------------------------------------------------------------------------------------

@dataclass
class ColearnResult:
    student_dir: Path
    downsampler_dir: Path | None
    version: str
    steps: int
    wall_time_s: float
    device: str
    final: dict[str, float]
    history: list[dict]
    time_breakdown: dict[str, dict[str, float]] = field(default_factory=dict)


def load_lpips_loss(weight: float, device: torch.device) -> tuple[LPIPSLoss | None, str]:
    """LPIPS with the real AlexNet weights, or None and the reason (never a random backbone)."""
    if weight <= 0:
        return None, "weight 0"
    from sr_pipeline.sr.lpips_weights import load_lpips

    metric = load_lpips(str(device))
    if not getattr(metric, "available", False):
        return None, f"unavailable: {metric.reason}"
    return LPIPSLoss(metric.net), "alexnet"


def _batches(loader) -> Iterator:
    while True:
        yield from loader


def train_colearn(
    profile: Profile,
    teacher_dir: Path,
    hr_images: list[np.ndarray],
    field_lr_images: list[np.ndarray],
    run_dir: Path,
    models_root: Path,
    *,
    resume: bool = False,
    report: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    image_ids: list[str] | None = None,
    field_image_ids: list[str] | None = None,
    student_out: Path | None = None,
    downsampler_out: Path | None = None,
) -> ColearnResult | None:
    """Co-learn (or resume) U and G from a frozen teacher; None when ``stop_after`` interrupts it on purpose."""
    from accelerate import Accelerator

    from sr_pipeline.sr.data import DegradedPairs, HRCrops, UnpairedLR, loader_for

    cfg, opt = profile.colearn, profile.colearn.train
    if not hr_images:
        raise ValueError("no HR reference images to co-learn on")
    needs_field = cfg.use_downsampler and (cfg.weights.adv_lr > 0 or cfg.weights.cyc_lr > 0)
    if needs_field and not field_lr_images:
        raise ValueError("no field LR images: D_LR and the LR cycle need them (or set colearn.use_downsampler: false)")
    run_dir = Path(run_dir)
    state = RunState(run_dir)
    if state.state_file.exists() and not resume:
        raise FileExistsError(
            f"{state.state_file} holds an unfinished run: pass --resume to continue it, or delete {run_dir}")

    teacher = load_sr_model(Path(teacher_dir))
    teacher_info = teacher.info
    if teacher.net.config.scale != profile.scale:
        raise ValueError(f"the teacher upscales x{teacher.net.config.scale}, the profile x{profile.scale}")
    use_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed_precision_for(opt.mixed_precision, use_cpu))
    if use_cpu:
        share_cpu_with_workers(opt.num_workers)
    seed_everything(opt.seed)
    lpips, lpips_status = load_lpips_loss(cfg.weights.lpips, accelerator.device)
    learner = CoLearner(profile, teacher.net, teacher.schedule, accelerator, lpips)
    stateful = learner.stateful()
    if resume and state.state_file.exists():
        state.load(stateful)
        accelerator.print(f"resuming {run_dir} at step {state.step}/{opt.steps}")

    # Every stream restarts at the sample the interrupted run would have drawn next.
    start, seed, s = state.step * opt.batch_size, opt.seed * 1_000_003, profile.scale
    if not cfg.use_downsampler and cfg.fixed_degradation == "synthetic":
        hr_data = DegradedPairs(hr_images, opt.patch_size, profile.degradation, seed)
    else:
        hr_data = HRCrops(hr_images, opt.patch_size, seed)
    hr_loader = accelerator.prepare(loader_for(hr_data, opt.batch_size, opt.num_workers, start))
    lr_loader = None
    if needs_field:
        lr_loader = accelerator.prepare(loader_for(UnpairedLR(field_lr_images, opt.patch_size // s, seed),
                                                   opt.batch_size, opt.num_workers, start))
    hr_batches = _batches(hr_loader)
    lr_batches = _batches(lr_loader) if lr_loader is not None else None

    progress = Progress(opt.steps, opt.batch_size * accelerator.num_processes, opt.patch_size**2,
                        report if accelerator.is_main_process else (lambda row: None))
    window: dict[str, list[float]] = defaultdict(list)
    t_start = time.perf_counter() - state.elapsed_s
    timer = learner.timer
    while state.step < opt.steps:
        with timer("data"):
            batch = next(hr_batches)
            x, y_fixed = (batch["hr"], batch["lr"]) if isinstance(batch, dict) else (batch, None)
            y_r = next(lr_batches) if lr_batches is not None else None
        row = learner.iteration(x, y_r, y_fixed, state.step + 1)
        state.step += 1
        for k, v in row.items():
            window[k].append(v)
        progress.tick()
        if state.step % opt.log_every == 0 or state.step == opt.steps:
            emitted = progress.emit(state.step, {k: float(np.mean(v)) for k, v in window.items()})
            state.history.append({k: v for k, v in emitted.items() if k not in ("total_steps", "hr_mp_per_s")})
            window = defaultdict(list)
        if state.checkpoint_or_stop(stateful, total_steps=opt.steps, save_every=opt.save_every, t_start=t_start,
                                    is_main=accelerator.is_main_process, stop_after=stop_after):
            return None

    wall = time.perf_counter() - t_start
    if not accelerator.is_main_process:
        return None
    # A folder chosen by the caller (the Dagster asset, --out) names the version, as for the teacher.
    version = Path(student_out).name if student_out else new_version()
    student_dir = Path(student_out) if student_out else Path(models_root) / "student" / version
    g_dir = None
    if learner.downsampler is not None:
        g_dir = Path(downsampler_out) if downsampler_out else Path(models_root) / "downsampler" / version
    breakdown = timer.breakdown()
    final = {k: v for k, v in state.history[-1].items() if k.startswith(("loss_", "acc_"))} if state.history else {}
    info = {
        "version": version,
        "profile": profile.to_dict(),
        "teacher": {"path": str(Path(teacher_dir).resolve()), "version": teacher_info.get("version")},
        "teacher_steps": learner.teacher_steps,
        "loss_weights": learner.weights,
        "lpips": lpips_status,
        "steps": state.step,
        "wall_time_s": wall,
        "device": device_label(accelerator),
        "mixed_precision": accelerator.mixed_precision,
        "final_loss": final.get("loss_total", float("nan")),
        "final": final,
        "history": state.history,
        "time_breakdown": breakdown,
        "num_images": len(hr_images),
        "num_field_images": len(field_lr_images),
        "image_ids": image_ids or [],
        "field_image_ids": field_image_ids or [],
    }

    def save_student(tmp: Path) -> None:
        learner.ema.model.save_pretrained(tmp)
        learner.schedule.save_config(tmp)

    save_model_dir(student_dir, save_student, {**info, "kind": "student",
                                                "downsampler": str(g_dir) if g_dir else None})
    if g_dir is not None:
        g = learner.unwrap(learner.downsampler)
        save_model_dir(g_dir, lambda tmp: g.save_pretrained(tmp),
                       {**info, "kind": "downsampler", "student": str(student_dir)})
    state.state_file.unlink(missing_ok=True)  # finished: a later run starts fresh
    return ColearnResult(student_dir, g_dir, version, state.step, wall, info["device"], final, state.history,
                         breakdown)


# ---- command line and Pipes entry -------------------------------------------------------------------------

def load_catalog_images(data_root: Path | None, role: str) -> tuple[list[np.ndarray], list[str]]:
    """Every accepted catalogued image of a role (``hr_reference``, ``field_lr``) with its image id."""
    from sr_pipeline.storage.layout import DataLayout
    from sr_pipeline.storage.store import list_images, load_image

    layout = DataLayout(Path(data_root)) if data_root else DataLayout.default()
    rows = list_images(layout, role=role)
    return [load_image(p) for p in rows["path"]], list(rows["image_id"])


def newest_teacher(models_root: Path) -> Path | None:
    """The most recently created teacher folder under ``<models>/teacher/``."""
    folders = [p for p in (Path(models_root) / "teacher").glob("*") if (p / "training.json").is_file()
               and not p.name.startswith(".")]
    if not folders:
        return None
    return max(folders, key=lambda p: (read_info(p).get("created", ""), p.name))


def _run(profile: Profile, data_root: Path, teacher: Path | None, run_dir: Path | None, resume: bool,
         report: Callable[[dict], None] | None, student_out: Path | None = None,
         downsampler_out: Path | None = None) -> ColearnResult | None:
    from sr_pipeline.storage.layout import DataLayout

    layout = DataLayout(Path(data_root))
    teacher = teacher or newest_teacher(layout.models)
    if teacher is None:
        raise ValueError(f"no teacher under {layout.models / 'teacher'}: train one first (sr-pipeline train teacher)")
    hr, hr_ids = load_catalog_images(layout.root, "hr_reference")
    if not hr:
        raise ValueError(f"no HR reference images in the catalog under {layout.root}")
    field_lr, field_ids = load_catalog_images(layout.root, "field_lr")
    run_dir = run_dir or layout.runs / "colearn" / profile.name
    return train_colearn(profile, teacher, hr, field_lr, run_dir, layout.models, resume=resume, report=report,
                         image_ids=hr_ids, field_image_ids=field_ids, student_out=student_out,
                         downsampler_out=downsampler_out)


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline train colearn --config FILE [--resume] [--teacher DIR] [--run-dir DIR]``."""
    from sr_pipeline.storage.layout import DataLayout

    try:
        profile = Profile.from_yaml(args.config)
        result = _run(profile, args.layout.root, getattr(args, "teacher", None),
                      getattr(args, "run_dir", None), bool(getattr(args, "resume", False)), None,
                      getattr(args, "out", None), getattr(args, "downsampler_out", None))
    except (ProfileError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(f"co-learned {result.version}: {result.steps} steps in {result.wall_time_s:.0f} s on {result.device}\n"
              f"time per step: {format_breakdown(result.time_breakdown)}\n"
              f"student saved to {result.student_dir}"
              + (f"\ndownsampler saved to {result.downsampler_dir}" if result.downsampler_dir else ""))
    return 0


def run_pipes_entry(args: argparse.Namespace, pipes) -> None:
    """``python -m sr_pipeline.training.entry colearn ...``: train, then report both assets through Pipes.

    The reports stay small (Pipes' file reader can catch a long message half-written); the asset
    builds the full metadata (curves, profile, time breakdown) from each folder's training.json."""
    profile = Profile.from_yaml(args.config)
    report = (lambda row: pipes.log.info(format_progress(row))) if pipes else None
    result = _run(profile, args.data, args.teacher, args.run_dir, args.resume, report, args.out, args.downsampler_out)
    if result is None:
        return
    if pipes is None:
        print(f"time per step: {format_breakdown(result.time_breakdown)}")
        return
    small = {"version": result.version, "steps": result.steps}
    pipes.report_asset_materialization(asset_key=STUDENT_ASSET, data_version=result.version, metadata=small)
    if result.downsampler_dir is not None:
        pipes.report_asset_materialization(asset_key=DOWNSAMPLER_ASSET, data_version=result.version, metadata=small)
