"""``sr-pipeline consistency``: score existing LR/SR pairs against what the camera recorded.

An SR file (ours or another tool's) is matched to its LR by name: ``<stem>_x<scale>.png`` or
``<stem>.<ext>`` matches the LR ``<stem>.*`` (in the same sub-folder when both sides are folders;
two files given directly are a pair whatever their names). The scale is the SR size over the LR
size and must be the same whole number on both axes. Each pair gets the measure, verdict and
thresholds the upscaler uses (:mod:`sr_pipeline.serving.consistency`), so auditing an upscaled PNG
finds exactly the figures the upscaler wrote into it. The SR image is fed to the measure in row
bands, so besides the decoded files only LR-sized arrays are held.

Exit codes: 0 every pair is ``ok``; 1 a pair is ``check``, a pair could not be scored (unreadable,
unmatched, not a whole-number scale) or there was nothing to score; 2 bad usage (one sentence).

The helpers the upscaler shares (loading the check with one-sentence refusals, measuring a saved
output, writing a heat map) live here too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sr_pipeline.common.errors import UsageError, check_input_file, check_output_folder
from sr_pipeline.sr.models.checkpoints import check_model_folder
from sr_pipeline.serving.consistency import BICUBIC, ConsistencyCheck, co_trained_downsampler, load_check
from sr_pipeline.sr.serve.consistency import (
    MAP_FILE_SUFFIX, THRESHOLDS_FILE, BicubicCamera, Consistency, LearnedCamera, load_thresholds, map_png,
)
from sr_pipeline.sr.images.decode import IMAGE_EXTENSIONS, ImageRejected, SourceImage, read_image
from sr_pipeline.common.atomic import atomic_write
from sr_pipeline.sr.judge.wording import PEAK_DECIMALS, PSNR_DECIMALS, count, fixed, percent

FEED_ROWS = 256  # SR rows converted to float at a time when measuring a saved file
_SCALE_SUFFIX = re.compile(r"^(?P<stem>.+)_x(?P<scale>\d+)$")


# ---------------------------------------------------------------- shared with the upscaler


def check_judge_args(camera_model: str | None, thresholds_file: Path | None) -> None:
    """Refuse a missing or bad ``--consistency-thresholds`` file and a ``--camera-model`` that is
    neither ``bicubic`` nor a folder (``UsageError``), before any model is loaded."""
    if thresholds_file is not None:
        check_input_file("--consistency-thresholds", thresholds_file, "consistency.json file")
        try:
            load_thresholds(thresholds_file)
        except ValueError as exc:
            raise UsageError(f"--consistency-thresholds {exc}") from None
    if camera_model not in (None, BICUBIC):
        path = Path(camera_model)
        if not path.is_dir():
            state = "is a file" if path.exists() else "does not exist"
            raise UsageError(f"--camera-model {path} {state}; pass a downsampler folder or '{BICUBIC}'")
        if not (path / "config.json").is_file():
            raise UsageError(f"--camera-model {path} is not a downsampler folder (no config.json); "
                             f"pass one such as <data>/models/downsampler/<version>, or '{BICUBIC}'")


def check_camera_id(camera: str | None, model_dir: Path | None, thresholds_file: Path | None = None) -> None:
    """With a model named, ``--camera`` must be a camera that the camera registry, the model's
    training.json or its thresholds know; an unknown one (a typing mistake) is a ``UsageError``
    rather than silently judged by the thresholds fitted on all cameras."""
    if camera is None or model_dir is None:
        return
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.sr.models.checkpoints import read_info

    try:
        known = set(load_registry().ids())
    except ValueError as exc:
        raise UsageError(f"--camera {camera} cannot be checked: {exc}") from None
    try:
        known.add(read_info(Path(model_dir)).get("camera"))
    except (OSError, ValueError, AttributeError):
        pass  # check_model_folder names a bad training.json
    source = thresholds_file or Path(model_dir) / THRESHOLDS_FILE
    if Path(source).is_file():
        try:
            known |= set(load_thresholds(Path(source)))
        except ValueError:
            pass  # check_judge_args and load_check name a bad thresholds file
    known = sorted(k for k in known if k and k != "all")
    if camera not in known:
        raise UsageError(f"--camera {camera!r} is not a known camera (known: {', '.join(known) or 'none'}); "
                         "pass one of them or leave --camera out")


def load_consistency_check(model_dir: Path | None, scale: int, camera_model: str | None,
                           thresholds_file: Path | None, device: str = "cpu") -> ConsistencyCheck:
    """:func:`load_check` on ``device`` (the upscaler's while upscaling; the CPU for audits) with its
    refusals as one-sentence :class:`UsageError`."""
    check_judge_args(camera_model, thresholds_file)
    try:
        return load_check(model_dir, scale, camera_model=camera_model, thresholds_file=thresholds_file, device=device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def describe_check(check: ConsistencyCheck, camera_id: str | None) -> dict:
    """What judges the outputs, for a JSON summary: the camera model and the thresholds in use."""
    t = check.thresholds_of(camera_id).to_dict()
    t.pop("fit", None)
    return {"camera_model": check.camera.name, "camera": camera_id, "thresholds_file": check.thresholds_source,
            "thresholds": t}


def measure_saved(check: ConsistencyCheck, lr: np.ndarray, sr: np.ndarray, camera_id: str | None, *,
                  keep_map: bool = False) -> Consistency:
    """The consistency of a decoded output ``sr`` with its input ``lr`` (both as :func:`read_image`
    gives their colour), fed in row bands as the upscaler feeds what it writes."""
    cp = check.start(lr, camera_id, keep_map=keep_map)
    for r in range(0, sr.shape[0], FEED_ROWS):
        cp.feed(sr[r:r + FEED_ROWS])
    return cp.finish()


def write_map(result: Consistency, lr: np.ndarray, path: Path, output: np.ndarray | Path | None = None) -> Path:
    """The heat map of ``result`` over its input, published atomically at ``path``; for a ``check``
    output with ``output`` (the image, or its file, read only then) the panel LR | output | map."""
    if isinstance(output, Path):
        output = read_image(output).colour if result.verdict == "check" else None
    atomic_write(path, map_png(result, lr, output=output), sync_dir=False)
    return path


def map_path(folder: Path, output: Path, rel_parent: Path = Path()) -> Path:
    """``<folder>/<rel_parent>/<output stem>_consistency.png``."""
    return Path(folder) / rel_parent / f"{Path(output).stem}{MAP_FILE_SUFFIX}"


def scale_of(lr: SourceImage, sr: SourceImage) -> int:
    """The whole-number scale from LR to SR, the same on both axes (``ValueError`` otherwise)."""
    sizes = f"SR {sr.width}x{sr.height} against LR {lr.width}x{lr.height}"
    if sr.width % lr.width or sr.height % lr.height:
        raise ValueError(f"{sizes} is not a whole-number scale")
    sx, sy = sr.width // lr.width, sr.height // lr.height
    if sx != sy:
        raise ValueError(f"{sizes} is {sx}x wide but {sy}x tall; the scale must be the same on both axes")
    if sx < 2:
        raise ValueError(f"{sizes} is not larger than its LR")
    return sx


# ---------------------------------------------------------------- pairing by name


def _images(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                  and not f.name.startswith(".") and not f.name.endswith(MAP_FILE_SUFFIX))


def match_pairs(lr_root: Path, sr_root: Path) -> list[tuple[Path | None, Path, str | None]]:
    """``(lr, sr, problem)`` for every SR image (for one LR file: every SR image of its name); ``lr``
    is None and ``problem`` says why when an SR has no single LR of its name."""
    lr_files, sr_files = _images(lr_root), _images(sr_root)
    if lr_root.is_file() and sr_root.is_file():
        return [(lr_root, sr_root, None)]
    both_dirs = lr_root.is_dir() and sr_root.is_dir()

    def folder(path: Path, root: Path) -> Path:
        return path.parent.relative_to(root) if both_dirs else Path()

    by_key: dict[tuple[Path, str], list[Path]] = {}
    for f in lr_files:
        by_key.setdefault((folder(f, lr_root), f.stem), []).append(f)
    pairs: list[tuple[Path | None, Path, str | None]] = []
    for sr in sr_files:
        named = _SCALE_SUFFIX.match(sr.stem)
        stems = ([named["stem"]] if named else []) + [sr.stem]
        where = folder(sr, sr_root)
        found = next((by_key[(where, s)] for s in stems if (where, s) in by_key), [])
        if len(found) == 1:
            pairs.append((found[0], sr, None))
        else:
            lr_dir = lr_root / where if both_dirs else lr_root
            names = " or ".join(f"{s}.*" for s in stems)
            problem = (f"no LR image named {names} in {lr_dir}" if not found else
                       f"{len(found)} LR images match it ({', '.join(p.name for p in found)}); rename all but one")
            pairs.append((None, sr, problem))
    if lr_root.is_file():  # one recording: its restorations in the folder, the other files are not asked about
        pairs = [p for p in pairs if p[0] is not None] or [
            (None, sr_root, f"no image in {sr_root} is named {lr_root.stem}_x<scale>.png or {lr_root.stem}.*")]
    return pairs


def named_scale(sr: Path) -> int | None:
    """The scale an SR file's name claims (``<stem>_x<scale>``), if any."""
    named = _SCALE_SUFFIX.match(Path(sr).stem)
    return int(named["scale"]) if named else None


# ---------------------------------------------------------------- the command


def _checks(args: argparse.Namespace,
            model_dir: Path | None) -> tuple[ConsistencyCheck, Callable[[int], ConsistencyCheck]]:
    """The loaded check, and the check for a pair's scale: the learned camera serves only its own
    scale; bicubic any."""
    g_dir = None
    if args.camera_model != BICUBIC:
        try:
            g_dir = Path(args.camera_model) if args.camera_model else (co_trained_downsampler(model_dir)
                                                                        if model_dir else None)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:  # bicubic serves every scale: 4 only stands in until a pair's own scale is known
        g_scale = int(json.loads((g_dir / "config.json").read_text())["scale"]) if g_dir else 4
    except (OSError, ValueError, KeyError, TypeError):
        g_scale = 4  # an unreadable folder: load_check names it
    base = load_consistency_check(model_dir, g_scale, args.camera_model, args.consistency_thresholds)

    def for_scale(scale: int) -> ConsistencyCheck:
        if isinstance(base.camera, LearnedCamera):
            if scale != base.camera.scale:
                raise ValueError(f"the camera model {base.camera.name} is x{base.camera.scale} and this pair is "
                                 f"x{scale}; pass --camera-model {BICUBIC} to judge it")
            return base
        return ConsistencyCheck(BicubicCamera(scale), base.thresholds, base.thresholds_source)

    return base, for_scale


def _model_dir(args: argparse.Namespace) -> Path | None:
    """``--model``, else the promoted student (its G and thresholds judge by default), else none."""
    if args.model is not None:
        check_model_folder("--model", args.model)
        return Path(args.model)
    from sr_pipeline.storage.registry import promoted_student_for

    try:
        return promoted_student_for(args.layout, args.camera)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _score(lr_path: Path, sr_path: Path, checks: Callable[[int], ConsistencyCheck],
           args: argparse.Namespace) -> dict:
    lr, sr = read_image(lr_path), read_image(sr_path)
    scale = scale_of(lr, sr)
    claimed = named_scale(sr_path)
    if claimed is not None and claimed != scale and sr_path.stem != lr_path.stem:
        raise ValueError(f"{sr_path.name} is named x{claimed} but is {scale}x its LR {lr_path.name}")
    result = measure_saved(checks(scale), lr.colour, sr.colour, args.camera, keep_map=args.map is not None)
    row = {"status": "scored", "scale": scale, **result.record()}
    if args.map is not None:
        rel = sr_path.parent.relative_to(args.sr) if args.sr.is_dir() else Path()
        row["consistency_map"] = str(write_map(result, lr.colour, map_path(args.map, sr_path, rel), sr.colour))
    return row


def _line(row: dict) -> str:
    if row["status"] == "failed":
        return f"{row['sr']}: failed ({row['reason']})"
    figures = (f"consistency PSNR-Y {fixed(row['consistency_psnr_y'], 1, PSNR_DECIMALS)} dB, "
               f"peak {fixed(row['consistency_peak'], 0, PEAK_DECIMALS)} levels, "
               f"{percent(row['consistency_flagged_share'])} flagged")
    verdict = row["consistency_verdict"] + (f": {row['consistency_reasons']}" if row["consistency_reasons"] else "")
    return f"{row['sr']}: {verdict} ({figures})"


def run_cli(args: argparse.Namespace) -> int:
    """Score every SR against its LR; exit 0 all ok, 1 any check or failed pair, 2 bad usage."""
    for option, path in (("--lr", args.lr), ("--sr", args.sr)):
        if not path.exists():
            raise UsageError(f"{option} {path} does not exist; pass an image file or a folder of images")
    if args.map is not None:
        check_output_folder("--map", args.map, "the heat maps, named <SR stem>_consistency.png")
    check_judge_args(args.camera_model, args.consistency_thresholds)
    model_dir = _model_dir(args)
    check_camera_id(args.camera, model_dir, args.consistency_thresholds)
    base, checks = _checks(args, model_dir)
    rows, counts = [], {"ok": 0, "check": 0, "failed": 0}
    for lr_path, sr_path, problem in match_pairs(args.lr, args.sr):
        row: dict = {"lr": None if lr_path is None else str(lr_path), "sr": str(sr_path)}
        try:
            if problem is not None:
                raise ValueError(problem)
            row.update(_score(lr_path, sr_path, checks, args))
        except (ImageRejected, OSError, ValueError, MemoryError) as exc:
            row.update(status="failed", reason=str(exc))
        counts["failed" if row["status"] == "failed" else row["consistency_verdict"]] += 1
        rows.append(row)
        if not args.json:
            print(_line(row))
    if args.json:
        print(json.dumps({"model": None if model_dir is None else str(model_dir),
                          "consistency": describe_check(base, args.camera), "pairs": rows,
                          "succeeded": counts["ok"] + counts["check"], **counts}, indent=2))
    elif rows:
        print(f"{count(len(rows), 'pair')}: {counts['ok']} ok, {counts['check']} "
              f"{'needs' if counts['check'] == 1 else 'need'} a person's look (check), "
              f"{counts['failed']} could not be scored")
    else:
        print(f"error: no SR images found in {args.sr}", file=sys.stderr)
    return 0 if rows and counts["ok"] == len(rows) else 1
