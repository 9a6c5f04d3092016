"""``sr-pipeline train teacher|colearn``: the one way a training process starts, by hand or from Dagster.

Launched by a Dagster asset (``DAGSTER_PIPES_CONTEXT`` set), the main process (``RANK`` 0) opens
Dagster Pipes: progress goes to the run log and each model folder written is reported as a
materialisation of the asset key the asset passed in the Pipes extra ``asset_keys`` (role ->
key: ``teacher``, ``student``, ``downsampler``). The reports stay small (Pipes' file reader can
catch a long message half-written); the asset builds the full metadata from training.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from sr_pipeline.common.errors import EXIT_USAGE, check_input_file, check_output_folder, one_sentence
from sr_pipeline.sr.models.checkpoints import check_model_folder

ASSET_KEYS_EXTRA = "asset_keys"


def _pipes_session():
    if "DAGSTER_PIPES_CONTEXT" in os.environ and int(os.environ.get("RANK", "0")) == 0:
        from dagster_pipes import open_dagster_pipes

        return open_dagster_pipes()
    return contextlib.nullcontext(None)


def _train(args: argparse.Namespace, report):
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.sr.train.profile import Profile
    from sr_pipeline.training import run

    profile = Profile.from_yaml(args.config)
    common = dict(out=args.out, run_dir=args.run_dir, resume=args.resume, report=report)
    if args.model_kind == "teacher":
        return run.train_teacher_from_catalog(args.layout, profile, **common)
    if args.fixed_degradation:
        return run.train_challenger_from_catalog(args.layout, profile, teacher=args.teacher, **common)
    registry = load_registry(args.cameras) if args.cameras is not None else None
    return run.train_colearn_from_catalog(args.layout, profile, teacher=args.teacher,
                                          downsampler_out=args.downsampler_out, camera=args.camera,
                                          registry=registry, unpaired_twin_of=args.unpaired_twin_of, **common)


def _summary(kind: str, result) -> str:
    from sr_pipeline.sr.train.timing import format_breakdown

    lines = [f"{kind} {result.version}: {result.steps} steps in {result.wall_time_s:.0f} s on {result.device}, "
             f"final loss {result.final_loss:.4g}"]
    if result.info.get("time_breakdown"):
        lines.append(f"time per step: {format_breakdown(result.info['time_breakdown'])}")
    lines += [f"{role} saved to {path}" for role, path in result.model_dirs.items()]
    return "\n".join(lines)


def report_materializations(pipes, result) -> None:
    """One materialisation per model folder written, under the asset key Dagster passed for its role."""
    keys = pipes.get_extra(ASSET_KEYS_EXTRA)
    small = {"version": result.version, "steps": result.steps}
    for role in result.model_dirs:
        if role in keys:
            pipes.report_asset_materialization(asset_key=keys[role], data_version=result.version, metadata=small)


def check_args(args: argparse.Namespace) -> None:
    """Refuse a --config that is not a file, an output or run folder that is a file, and a --teacher
    that is not a model folder (``UsageError``), before anything is read or trained."""
    check_input_file("--config", args.config, "training profile (configs/cpu-demo.yaml, configs/gpu.yaml)")
    for option, path, what in (("--out", args.out, "the trained model"),
                               ("--run-dir", args.run_dir, "the resumable training state"),
                               ("--downsampler-out", getattr(args, "downsampler_out", None), "the downsampler")):
        if path is not None:
            check_output_folder(option, path, what)
    if getattr(args, "teacher", None) is not None:
        check_model_folder("--teacher", args.teacher)


def run_cli(args: argparse.Namespace) -> int:
    """The ``train`` handler: ``args.model_kind`` is ``teacher`` or ``colearn``; the data root is ``args.layout``."""
    from sr_pipeline.common.cameras import CameraRegistryError, UnknownCameraError
    from sr_pipeline.sr.train.profile import ProfileError
    from sr_pipeline.sr.train.shared import format_progress

    with _pipes_session() as pipes:
        report = (lambda row: pipes.log.info(format_progress(row))) if pipes else None
        try:
            check_args(args)
            result = _train(args, report)
        except (ProfileError, ValueError, FileExistsError, FileNotFoundError, UnknownCameraError,
                CameraRegistryError) as exc:  # UsageError is a ValueError
            print(f"error: {one_sentence(exc)}", file=sys.stderr)
            if pipes:
                pipes.log.error(str(exc))
            return EXIT_USAGE
        if result is None:
            return 0
        print(_summary(args.model_kind, result), flush=True)
        if pipes:
            report_materializations(pipes, result)
    return 0
