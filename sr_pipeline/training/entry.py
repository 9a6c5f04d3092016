"""Entry point of the training processes that the Dagster training assets launch.

``python -m sr_pipeline.training.entry teacher --config F --out DIR --run-dir DIR`` (usually under
``accelerate launch``). Under Dagster Pipes, progress goes to the run log and a short result is
reported as the asset's materialisation (the asset reads the rest from the model folder); without
Pipes it prints, so the same command can be run by hand. Only the main process talks to Pipes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _pipes_session():
    if "DAGSTER_PIPES_CONTEXT" in os.environ and _is_main_process():
        from dagster_pipes import open_dagster_pipes

        return open_dagster_pipes()
    return contextlib.nullcontext(None)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sr_pipeline.training.entry")
    p.add_argument("kind", choices=["teacher", "colearn"])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="data root holding the catalog")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (the teacher, or the student for colearn)")
    p.add_argument("--run-dir", type=Path, required=True, help="resumable state folder")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--teacher", type=Path, default=None, help="teacher folder (colearn)")
    p.add_argument("--downsampler-out", type=Path, default=None, help="downsampler folder (colearn)")
    return p.parse_args(argv)


def _teacher(args: argparse.Namespace, pipes) -> None:
    from sr_pipeline.sr.config import Profile
    from sr_pipeline.sr.train_teacher import load_hr_references, train_teacher
    from sr_pipeline.sr.training import format_progress

    profile = Profile.from_yaml(args.config)
    images, ids = load_hr_references(args.data)
    report = (lambda row: pipes.log.info(format_progress(row))) if pipes else None
    result = train_teacher(profile, images, args.run_dir, args.out, args.data / "models",
                           resume=args.resume, report=report, image_ids=ids)
    if result is None or pipes is None:
        return
    # Kept small: Pipes' file reader can catch a long message half-written. The asset builds the full
    # metadata (curves, profile) from the model folder's training.json.
    pipes.report_asset_materialization(
        metadata={"version": result.version, "steps": result.steps, "final_loss": result.final_loss},
        data_version=result.version,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with _pipes_session() as pipes:
        if args.kind == "teacher":
            _teacher(args, pipes)
        else:
            from sr_pipeline.sr.train_colearn import run_pipes_entry

            run_pipes_entry(args, pipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
