"""The multi-step ResShift teacher as a training stage (method.md section 1).

One step: a batch of (HR crop, degraded LR) pairs, t uniform in 1..T, the x0-prediction loss, one
AdamW update, the EMA update. The EMA copy is the saved and served teacher. ``train_teacher`` runs
the stage through the shared loop into the folder its caller chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.models.diffusion import ResShiftSchedule
from sr_pipeline.sr.images.tensors import upsample
from sr_pipeline.sr.models.upsampler import SRUNet
from sr_pipeline.sr.train.stages.base import ModelOutput, Stage
from sr_pipeline.sr.train.loop import TrainResult, run_stage
from sr_pipeline.sr.train.shared import EMA, check_finite, warmup_lambda


def build_teacher(profile: Profile) -> tuple[SRUNet, ResShiftSchedule]:
    net = SRUNet(
        scale=profile.scale,
        block_out_channels=tuple(profile.net.block_out_channels),
        layers_per_block=profile.net.layers_per_block,
        attention_levels=tuple(profile.net.attention_levels),
        norm_num_groups=profile.net.norm_num_groups,
        num_train_timesteps=profile.diffusion.num_steps,
    )
    d = profile.diffusion
    return net, ResShiftSchedule(num_steps=d.num_steps, kappa=d.kappa, power=d.power)


def teacher_loss(net: torch.nn.Module, schedule: ResShiftSchedule, hr: torch.Tensor, lr: torch.Tensor,
                 scale: int) -> torch.Tensor:
    """E_t || f(x_t, up(y), t) - x0 ||^2 with t uniform in 1..T (method.md section 1)."""
    up_y = upsample(lr, scale)
    t = torch.randint(1, schedule.num_steps + 1, (hr.shape[0],), device=hr.device)
    x_t = schedule.q_sample(hr, up_y, t, torch.randn_like(hr))
    x0_hat = net(schedule.scale_input(x_t, t), up_y, t)
    return F.mse_loss(x0_hat.float(), hr.float())


class TeacherStage(Stage):
    """Train the teacher on HR references degraded on the fly; writes one ``teacher`` folder."""

    def __init__(self, profile: Profile, images: list[np.ndarray], out_dir: Path,
                 image_ids: list[str] | None = None):
        if not images:
            raise ValueError("no HR reference images to train the teacher on")
        self.profile, self.opt = profile, profile.teacher
        self.images, self.image_ids, self.out_dir = images, image_ids or [], Path(out_dir)

    def build(self, accelerator) -> None:
        cfg = self.opt
        net, self.schedule = build_teacher(self.profile)
        self.ema = EMA(net, cfg.ema_decay, cfg.ema_warmup)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(cfg.warmup_steps))
        self.net, self.optimizer = accelerator.prepare(net, optimizer)
        self.ema.model.to(accelerator.device)
        self.accelerator = accelerator

    def checkpointed(self) -> list:
        return [self.ema, self.lr_sched]

    def batches(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        from sr_pipeline.sr.data.datasets import make_loader

        cfg = self.opt
        # Samples depend only on (seed, index): a resumed run sees exactly the batches it would have seen.
        loader = make_loader(self.images, cfg.patch_size, cfg.batch_size, self.profile.degradation,
                             seed=cfg.seed, workers=cfg.num_workers, start=start)
        self.net.train()
        return iter(self.accelerator.prepare(loader))

    def step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        acc = self.accelerator
        with acc.autocast():
            loss = teacher_loss(self.net, self.schedule, batch["hr"], batch["lr"], self.profile.scale)
        check_finite({"loss": loss}, step)
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(self.net.parameters(), self.opt.grad_clip)
        self.optimizer.step()
        self.lr_sched.step()
        self.ema.update(acc.unwrap_model(self.net), step)
        return {"loss": loss.item()}

    def info(self, history: list[dict]) -> dict:
        return {"final_loss": history[-1]["loss"] if history else float("nan"),
                "num_images": len(self.images), "image_ids": self.image_ids}

    def outputs(self) -> list[ModelOutput]:
        def save(tmp: Path) -> None:
            self.ema.model.save_pretrained(tmp)
            self.schedule.save_config(tmp)

        return [ModelOutput("teacher", self.out_dir, save, {"kind": "teacher"})]


def train_teacher(profile: Profile, images: list[np.ndarray], run_dir: Path, out_dir: Path, *,
                  resume: bool = False, report: Callable[[dict], None] | None = None,
                  stop_after: int | None = None, image_ids: list[str] | None = None) -> TrainResult | None:
    """Train (or resume) the teacher into ``out_dir`` (its name is the version); None when interrupted."""
    return run_stage(TeacherStage(profile, images, out_dir, image_ids), run_dir, resume=resume, report=report,
                     stop_after=stop_after)
