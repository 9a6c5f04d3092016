"""Train the multi-step ResShift teacher on HR references degraded on the fly.

``train_teacher`` is the loop (accelerate: one process on the CPU, one GPU or several);
``run_cli`` is ``sr-pipeline train teacher``. The Dagster asset runs the same loop in a separate
process through ``sr_pipeline.training.entry``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sr_pipeline.sr.config import Profile, ProfileError
from sr_pipeline.sr.diffusion import ResShiftSchedule
from sr_pipeline.sr.imageops import upsample
from sr_pipeline.sr.nets import SRUNet
from sr_pipeline.sr.training import (
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


@dataclass
class TrainResult:
    model_dir: Path
    version: str
    steps: int
    wall_time_s: float
    device: str
    final_loss: float
    history: list[dict]


def train_teacher(
    profile: Profile,
    images: list[np.ndarray],
    run_dir: Path,
    out_dir: Path | None,
    models_root: Path,
    *,
    resume: bool = False,
    report: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    image_ids: list[str] | None = None,
) -> TrainResult | None:
    """Train (or resume) the teacher; returns None when ``stop_after`` interrupts it on purpose."""
    from accelerate import Accelerator

    from sr_pipeline.sr.data import make_loader

    cfg = profile.teacher
    if not images:
        raise ValueError("no HR reference images to train the teacher on")
    run_dir = Path(run_dir)
    state = RunState(run_dir)
    if state.state_file.exists() and not resume:
        raise FileExistsError(
            f"{state.state_file} holds an unfinished run: pass --resume to continue it, or delete {run_dir}"
        )

    use_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed_precision_for(cfg.mixed_precision, use_cpu))
    if use_cpu:
        share_cpu_with_workers(cfg.num_workers)
    seed_everything(cfg.seed)
    net, schedule = build_teacher(profile)
    ema = EMA(net, cfg.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(cfg.warmup_steps))
    stateful = {"net": net, "ema": ema, "optimizer": optimizer, "lr_sched": lr_sched}
    if resume and state.state_file.exists():
        state.load(stateful)
        accelerator.print(f"resuming {run_dir} at step {state.step}/{cfg.steps}")

    # Samples depend only on (seed, index): a resumed run sees exactly the batches it would have seen.
    loader = make_loader(images, cfg.patch_size, cfg.batch_size, profile.degradation,
                         seed=cfg.seed, workers=cfg.num_workers, start=state.step * cfg.batch_size)
    net, optimizer, loader = accelerator.prepare(net, optimizer, loader)
    ema.model.to(accelerator.device)
    progress = Progress(cfg.steps, cfg.batch_size * accelerator.num_processes, cfg.patch_size**2,
                        report if accelerator.is_main_process else (lambda row: None))
    window: list[float] = []
    t_start = time.perf_counter() - state.elapsed_s
    batches = iter(loader)
    net.train()
    while state.step < cfg.steps:
        batch = next(batches)
        with accelerator.autocast():
            loss = teacher_loss(net, schedule, batch["hr"], batch["lr"], profile.scale)
        check_finite({"loss": loss}, state.step + 1)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        lr_sched.step()
        state.step += 1
        ema.update(accelerator.unwrap_model(net), state.step)
        window.append(loss.item())
        progress.tick()
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            row = progress.emit(state.step, {"loss": float(np.mean(window))})
            state.history.append({"step": state.step, "loss": row["loss"], "samples_per_s": row["samples_per_s"]})
            window = []
        if state.checkpoint_or_stop(stateful, total_steps=cfg.steps, save_every=cfg.save_every, t_start=t_start,
                                    is_main=accelerator.is_main_process, stop_after=stop_after):
            return None

    wall = time.perf_counter() - t_start
    if not accelerator.is_main_process:
        return None
    # A folder chosen by the caller (the Dagster asset, --out) names the version.
    version = Path(out_dir).name if out_dir else new_version()
    out_dir = Path(out_dir) if out_dir else Path(models_root) / "teacher" / version
    info = {
        "kind": "teacher",
        "version": version,
        "profile": profile.to_dict(),
        "steps": state.step,
        "wall_time_s": wall,
        "device": device_label(accelerator),
        "mixed_precision": accelerator.mixed_precision,
        "final_loss": state.history[-1]["loss"] if state.history else float("nan"),
        "history": state.history,
        "num_images": len(images),
        "image_ids": image_ids or [],
    }

    def save(tmp: Path) -> None:
        ema.model.save_pretrained(tmp)
        schedule.save_config(tmp)

    save_model_dir(out_dir, save, info)
    state.state_file.unlink(missing_ok=True)  # finished: a later run starts fresh
    return TrainResult(out_dir, version, state.step, wall, info["device"], info["final_loss"], state.history)


def load_hr_references(data_root: Path | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Every accepted HR reference image in the catalog, as uint8 arrays, with their image ids."""
    from sr_pipeline.storage.layout import DataLayout
    from sr_pipeline.storage.store import list_images, load_image

    layout = DataLayout(Path(data_root)) if data_root else DataLayout.default()
    rows = list_images(layout, role="hr_reference")
    return [load_image(p) for p in rows["stored_path"]], list(rows["image_id"])


def run_cli(args: argparse.Namespace) -> int:
    from sr_pipeline.storage.layout import DataLayout

    try:
        profile = Profile.from_yaml(args.config)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    layout = args.layout
    images, ids = load_hr_references(layout.root)
    if not images:
        print(f"error: no HR reference images in the catalog under {layout.root}; "
              "ingest some first (sr-pipeline demo-data, then materialise raw_plant_images)", file=sys.stderr)
        return 2
    run_dir = args.run_dir or layout.runs / "teacher" / profile.name
    try:
        result = train_teacher(profile, images, run_dir, args.out, layout.models, resume=args.resume, image_ids=ids)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(f"teacher {result.version}: {result.steps} steps in {result.wall_time_s:.0f} s on {result.device}, "
              f"final loss {result.final_loss:.4g}\nsaved to {result.model_dir}")
    return 0
