"""The ``sr-pipeline`` command line: one sub-command per core function.

Each handler lives beside the code it drives and is imported only when its command runs, so
``sr-pipeline --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from pathlib import Path

from sr_pipeline.common.env_settings import MAX_SEED, check_environment, number_type, path_type, text_type
from sr_pipeline.common.errors import EXIT_USAGE, UsageError, one_sentence
from sr_pipeline.sr.serve.tiles import TileSettings

# infer.SELF_ENSEMBLE_SIZES, restated so that parsing arguments does not import torch (a test keeps them equal)
SELF_ENSEMBLE_CHOICES = (1, 2, 4, 8)
PATH = path_type("a path")
NAME = text_type("a name")


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the full usage stays in ``--help``)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def number(kind: type, minimum: float, describe: str, maximum: float | None = None):
    """An argparse type: an ``int`` or finite ``float`` in [minimum, maximum] (:func:`checks.number_type`)."""
    return number_type(kind, minimum, describe, maximum)


def _handler(target: str):
    """``"module:function"`` -> a callable resolved at call time."""

    def call(args: argparse.Namespace) -> int:
        module_name, func_name = target.split(":")
        return getattr(importlib.import_module(module_name), func_name)(args)

    return call


def _judge_options(p: argparse.ArgumentParser) -> None:
    """How outputs are judged against their input (``upscale`` and ``consistency`` share them)."""
    p.add_argument("--camera", type=NAME, default=None,
                   help="field camera id: its promoted student is the default --model, and its consistency "
                   "thresholds apply (default: the only camera with a promoted student; thresholds fitted on all)")
    p.add_argument("--camera-model", type=NAME, default=None, metavar="DIR|bicubic",
                   help="downsampler folder modelling the camera, or bicubic (default: the model's co-trained one)")
    p.add_argument("--consistency-thresholds", type=PATH, default=None, metavar="FILE",
                   help="consistency.json (default: the model folder's, else built-in defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sr-pipeline",
        description="Learn a plant's camera degradation and restore its images with a single-step "
        "diffusion upsampler. Every command works on the data root (--data, else "
        "$SR_PIPELINE_DATA, else the data/ folder of the sr_pipeline checkout, wherever you run it from). Exit codes: 0 done, 1 something is left (files that "
        "failed, heat maps not written, doctor's unfixed problems, LPIPS weights unavailable; reported), "
        "2 bad input (one sentence on stderr).",
    )
    parser.add_argument("--data", type=PATH, default=None, help="data root (default: $SR_PIPELINE_DATA, else the checkout's data/ folder)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-data", help="write the bundled demo camera uploads into the landing folder")
    p.add_argument("--seed", type=number(int, 0, "a seed", MAX_SEED), default=0, help="seed of the simulated cameras (default 0)")
    p.add_argument("--force", action="store_true", help="write again even if the demo uploads are already there")
    p.set_defaults(func=_handler("sr_pipeline.intake.demo_data:run_cli"))

    p = sub.add_parser("demo", help="the main job on the bundled data: demo uploads, ingestion, training, ...")
    p.set_defaults(func=_handler("sr_pipeline.demo:run_cli"))

    p = sub.add_parser("ingest", help="ingest a folder of images from disk through the same path as camera uploads")
    p.add_argument("src_dir", type=PATH, help="folder of images (for calibration pairs: pairs/<name>/{hr,lr} or HR/ + LR/)")
    p.add_argument("--camera", type=NAME, required=True, help="camera id from the camera registry (configs/cameras.yaml)")
    p.add_argument("--batch", type=NAME, default=None, help="batch key (default: <camera>-<UTC time>-<short hash>)")
    p.add_argument("--cameras", type=PATH, default=None, help="camera registry file (default $SR_PIPELINE_CAMERAS, else configs/cameras.yaml)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=_handler("sr_pipeline.intake.ingest:run_cli"))

    p = sub.add_parser("doctor", help="report (and clear) stale temp files and unfinished upload batches")
    p.add_argument("--clean", action="store_true", help="remove the stale temp files (and name files of finished batches)")
    p.add_argument("--finish", action="store_true", help="ingest the unfinished batches nobody is ingesting now")
    p.add_argument("--batch", type=NAME, action="append", default=[], help="only this batch (repeatable)")
    p.add_argument("--rebuild-catalog", action="store_true",
                   help="move damaged catalogs aside and rebuild them from the image store and quarantine records")
    p.add_argument("--out", action="append", default=[], type=PATH,
                   help="also look for stale temp files in this output folder, e.g. an upscale --out (repeatable)")
    p.add_argument("--min-age", type=number(float, 0, "seconds", 10 * 365 * 86400), default=3600.0,
                   help="temp files younger than this many seconds are left alone (default 3600)")
    p.add_argument("--cameras", type=PATH, default=None, help="camera registry file for --finish (default $SR_PIPELINE_CAMERAS, else configs/cameras.yaml)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(func=_handler("sr_pipeline.intake.doctor:run_cli"), reads_data_root=True)

    train = sub.add_parser("train", help="train a model (the same command Dagster's training assets launch)")
    train_sub = train.add_subparsers(dest="model_kind", required=True, metavar="KIND")
    for kind, help_text, out_kind in (
        ("teacher", "train the multi-step ResShift teacher", "teacher"),
        ("colearn", "co-train the single-step student and the learnable downsampler", "student"),
    ):
        p = train_sub.add_parser(kind, help=help_text)
        p.add_argument("--config", type=PATH, required=True, help="training profile (configs/cpu-demo.yaml, configs/gpu.yaml)")
        p.add_argument("--resume", action="store_true", help="continue from the run's last saved state")
        p.add_argument("--out", type=PATH, default=None,
                       help=f"{out_kind} folder to write (default: <data>/models/{out_kind}/<new version>)")
        p.add_argument("--run-dir", type=PATH, default=None,
                       help=f"resumable state folder (default: <data>/runs/{kind}/<profile>"
                       + ("-<camera>)" if kind == "colearn" else ")"))
        p.set_defaults(func=_handler("sr_pipeline.training.launch:run_cli"))
    # colearn only (the last parser of the loop):
    p.add_argument("--teacher", type=PATH, default=None, help="teacher folder (default: the newest teacher)")
    p.add_argument("--downsampler-out", type=PATH, default=None,
                   help="downsampler folder (default: <data>/models/downsampler/<the student's version>)")
    p.add_argument("--camera", type=NAME, default=None,
                   help="field camera to co-learn (one student and camera model per field camera; default: the "
                   "only field camera with images in the catalog)")
    p.add_argument("--cameras", type=PATH, default=None, help="camera registry file (default $SR_PIPELINE_CAMERAS, else configs/cameras.yaml)")
    p.add_argument("--unpaired-twin-of", type=NAME, default=None, metavar="VERSION",
                   help="train the promotion gate's unpaired twin of student VERSION: the same co-learning without "
                   "the camera's fit pairs (for a camera with fit_pairs; the Dagster asset trains it beside each "
                   "student of such a camera, as <data>/models/{student,downsampler}/unpaired-VERSION)")
    p.add_argument("--fixed-degradation", action="store_true",
                   help="train the promotion gate's challenger instead: the same student on bicubic degradation, no "
                   "camera model, no field images (default folder: <data>/models/student/fixed-<teacher version>)")

    p = sub.add_parser("upscale", help="upscale images with a student (1 step) or a teacher (--steps T)")
    p.add_argument("inputs", nargs="+", type=PATH, help="image files or folders (searched recursively)")
    p.add_argument("--out", type=PATH, required=True,
                   help="output folder (PNG, named <stem>_x<scale>.png; a rerun keeps the finished ones)")
    p.add_argument("--model", type=PATH, default=None, help="checkpoint folder (default: the promoted student)")
    p.add_argument("--steps", type=number(int, 1, "sampler steps", 10_000), default=None,
                   help="sampler steps: a student runs 1; a teacher runs its T unless set (1..T)")
    p.add_argument("--noise-scale", type=number(float, 0, "start noise", 100), default=None,
                   help="start noise: 0 starts at the mean (fidelity first), 1 samples eps ~ N(0, I); default: "
                        "the model's own (a student's distillation start noise, a teacher's 0)")
    p.add_argument("--seed", type=number(int, 0, "a seed", MAX_SEED), default=0,
                   help="start-noise seed, used when the start noise (--noise-scale or the model's own) is > 0")
    p.add_argument("--self-ensemble", type=int, choices=SELF_ENSEMBLE_CHOICES, default=1,
                   help="average each tile's output over N flips and quarter turns (N times the time; default 1: "
                        "the model alone; docs/benchmarks.md has what it gains)")
    p.add_argument("--tile", type=number(int, 1, "LR tile side", 8192), default=TileSettings.tile,
                   help="LR tile side in pixels (memory is bounded by it)")
    p.add_argument("--overlap", type=number(int, 0, "LR pixels", 8191), default=TileSettings.overlap,
                   help="LR pixels shared by neighbouring tiles")
    p.add_argument("--batch", type=number(int, 1, "tiles per network call", 4096), default=TileSettings.batch,
                   help="tiles per network call (lowered to fit --memory-budget)")
    p.add_argument("--memory-budget", type=number(float, 0, "GiB; 0: no limit", 65536), default=4.0,
                   help="peak memory budget per image in GiB (default 4; 0: no limit)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (pays off on large jobs)")
    p.add_argument("--drop-alpha", action="store_true",
                   help="drop an alpha channel instead of carrying it through (bicubic-upscaled)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (without it, one from another source or model is a failure)")
    _judge_options(p)
    p.add_argument("--consistency-map", type=PATH, default=None, metavar="DIR",
                   help="write a heat map per output of where it disagrees with its input "
                   "(<stem>_x<scale>_consistency.png)")
    p.add_argument("--no-consistency", action="store_true", help="skip the consistency measure and verdict")
    p.add_argument("--enforce-consistency", action="store_true",
                   help="project each output back towards its input through the camera model "
                   "(holds the whole output in memory)")
    p.add_argument("--enforce-iterations", type=number(int, 1, "back-projection steps", 100), default=1,
                   help="back-projection steps of --enforce-consistency (default 1: on RealSR one step through "
                   "G cost 0.05 dB PSNR-Y and improved LPIPS, three cost 0.31 dB; docs/benchmarks.md)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=_handler("sr_pipeline.serving.upscale:run_cli"))

    p = sub.add_parser("consistency",
                       help="score existing LR/SR pairs (matched by name) against what the camera recorded",
                       description="Score existing LR/SR pairs, ours or another tool's: an SR named "
                       "<stem>_x<scale>.png or <stem>.<ext> matches the LR <stem>.*. Exit codes: 0 every pair ok, "
                       "1 a pair needs a person's look (check) or could not be scored, 2 bad input.")
    p.add_argument("--lr", type=PATH, required=True, help="the recorded LR image or folder")
    p.add_argument("--sr", type=PATH, required=True, help="the restored image or folder")
    p.add_argument("--model", type=PATH, default=None,
                   help="student whose co-trained downsampler and consistency.json judge (default: the promoted one)")
    _judge_options(p)
    p.add_argument("--map", type=PATH, default=None, metavar="DIR",
                   help="write a heat map per pair (<SR stem>_consistency.png)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(func=_handler("sr_pipeline.serving.audit:run_cli"))

    p = sub.add_parser("evaluate", help="score bicubic and models on HR/LR pairs (PSNR-Y, SSIM-Y, LPIPS, time)",
                       description="Score bicubic and the given models on HR/LR pairs. Bad input exits with "
                       "code 2 and one sentence before anything is scored: a pair file that is not a readable "
                       "image, or whose HR is not --scale times its LR, is such an error (fix or remove it).")
    p.add_argument("--pairs", type=PATH, required=True, help="folder with HR/ and LR/ matched by file name")
    p.add_argument("--split", choices=["all", "even", "odd"], default="all",
                   help="keep files whose first number is even or odd (the RealSR real-world protocol)")
    p.add_argument("--model", type=PATH, action="append", default=[], help="student folder (repeatable)")
    p.add_argument("--teacher", type=PATH, default=None, help="teacher folder, run with --steps")
    p.add_argument("--steps", type=number(int, 1, "sampler steps", 10_000), default=None,
                   help="teacher sampler steps (default: its T)")
    p.add_argument("--noise-scale", type=number(float, 0, "start noise", 100), action="append", default=None,
                   help="score every model at this start noise (repeatable: one row per model and scale; "
                        "default: each model's own, a student's distillation start noise, a teacher's 0)")
    p.add_argument("--self-ensemble", type=int, choices=SELF_ENSEMBLE_CHOICES, action="append", default=None,
                   help="score every model averaged over N flips and turns of each tile (repeatable: one row per "
                        "model and N; N times the time; default 1, the model alone)")
    p.add_argument("--scale", type=number(int, 1, "the HR/LR size ratio", 64), default=4,
                   help="HR side / LR side of every pair and of every model (default 4)")
    p.add_argument("--no-border-crop", action="store_true",
                   help="score PSNR-Y and SSIM-Y on the whole image (pyiqa's default, used by published RealSR "
                        "tables) instead of leaving --scale pixels out at each border")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", type=PATH, required=True, help="where metrics.parquet, summary.json, index.html go")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_handler("sr_pipeline.evaluation.commands:evaluate_cli"))

    p = sub.add_parser("models", help="list every checkpoint and which student is promoted")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_handler("sr_pipeline.storage.registry:run_cli"), reads_data_root=True)

    p = sub.add_parser(
        "promote", help="make an existing student the promoted one (rollback: promote the previous version)",
        description="Make an existing student the one that upscales its field camera's images from now on (batches "
        "already archived are redone only when their archive partitions are materialised again). The student it "
        "replaces counts as rolled back: the promotion gate never promotes it again by itself. Recorded in "
        "models/promotions.json and reported to the Dagster instance of $DAGSTER_HOME (else the data root's "
        "dagster_home) as a promoted_student materialisation, unless that instance records only another data "
        "root's students. Promoting the promoted student again records nothing and only brings an instance that "
        "does not show it up to date.")
    p.add_argument("version", type=NAME, help="student version as `sr-pipeline models` lists it (or its folder name)")
    p.add_argument("--reason", type=NAME, default=None, help="why; recorded in models/promotions.json")
    p.add_argument("--camera", type=NAME, default=None,
                   help="field camera to promote it for (default: the camera it was trained for; needed for the "
                   "fixed-degradation challenger, which belongs to no camera, once any student of the data root "
                   "belongs to one)")
    p.add_argument("--json", action="store_true", help="print the promotion in force as JSON (recorded_now, "
                   "dagster_home it was reported to, dagster_not_reported: why not, replaced_missing: the promotions it "
                   "replaced whose folder was gone)")
    p.set_defaults(func=_handler("sr_pipeline.defs.evaluation.promotion_events:promote_cli"), reads_data_root=True)

    p = sub.add_parser("lpips-weights", help="make the ImageNet AlexNet weights LPIPS needs available offline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_handler("sr_pipeline.sr.judge.lpips_weights:run_cli"))

    _data_anywhere(parser)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sr_pipeline")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _data_anywhere(parser: argparse.ArgumentParser) -> None:
    """Every command also takes ``--data`` after its name (``sr-pipeline models --data DIR``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    child.add_argument("--data", type=PATH, default=argparse.SUPPRESS,
                                       help="data root, as --data before the command (default: $SR_PIPELINE_DATA, "
                                       "else the checkout's data/ folder)")
                _data_anywhere(child)


def main(argv: list[str] | None = None) -> int:
    from sr_pipeline.storage.layout import DataLayout, default_data_root

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed): a code, as for every command
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        check_environment()
        # Built once here and handed to every command: nothing below reads the data root from the environment.
        args.layout = DataLayout(_data_root(args.data or default_data_root(), getattr(args, "reads_data_root", False)))
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except UsageError as exc:  # bad input, said in one sentence; every other exception is a bug to show
        print(f"error: {one_sentence(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:  # the machine's state, not a bug: a read-only data root or output folder
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: permission denied writing or reading{where}; give this user access to it (or pass another "
              "--data / output folder)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as exc:  # after BrokenPipeError, itself an OSError
        if exc.errno not in _DISK_STATES:
            raise
        # a read-only or full disk under any command (promote's log, a report): one sentence, no traceback
        where = f" in {Path(exc.filename).parent}" if exc.filename else ""  # the folder: the file is a temporary one
        state, fix = _DISK_STATES[exc.errno]
        print(f"error: cannot write{where}: {state}; {fix}, then run the command again", file=sys.stderr)
        return 1


_DISK_STATES = {errno.EROFS: ("the file system is read-only", "mount it writable"),
                errno.ENOSPC: ("the disk is full", "free some space"),
                errno.EDQUOT: ("this user's disk quota is used up", "free some space")}


def _data_root(path: Path, must_exist: bool = False) -> Path:
    """The data root as a resolved folder. A command that only reads one (``must_exist``: models, doctor,
    promote) refuses a root that does not exist, which is a typing mistake, rather than report it empty;
    the commands that create one (demo-data, ingest, train, ...) make it."""
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"the data root {path} is a file; pass a folder with --data (or $SR_PIPELINE_DATA)")
    if must_exist and not path.exists():
        raise UsageError(f"the data root {path} does not exist; pass the plant's data folder (the one holding "
                         "models/ and catalog/) with --data or $SR_PIPELINE_DATA, or create it with "
                         "`sr-pipeline demo-data` or `sr-pipeline ingest`")
    return path


def _stdout_closed() -> int:
    """The reader of our output went away (``| head``): stop quietly, as POSIX tools do on SIGPIPE.

    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
