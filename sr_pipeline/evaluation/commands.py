"""The ``sr-pipeline evaluate`` and ``sr-pipeline promote`` commands.

``evaluate`` scores bicubic and the given checkpoints (students with one step, a teacher with its T
steps or ``--steps``) on a folder of HR/LR pairs and writes ``metrics.parquet``, ``summary.json``
and a self-contained ``index.html`` into ``--out``. ``promote`` makes an existing student the
promoted one (:mod:`.promotion`). Bad input to either (a bad number, a path of the wrong kind, a
pair image that cannot be read or has the wrong size) is one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sr_pipeline.common.errors import EXIT_USAGE, UsageError, check_output_folder, one_sentence
from sr_pipeline.sr.models.checkpoints import check_model_folder
from sr_pipeline.evaluation.files import write_bytes, write_json, write_metrics_parquet
from sr_pipeline.sr.data.pairs import EvaluationError, Pair, find_pairs
from sr_pipeline.sr.judge.scoring import Method

if TYPE_CHECKING:
    from sr_pipeline.storage.layout import DataLayout


def evaluate_pairs(pairs: list[Pair], methods: dict[str, Method], scale: int, out_dir: Path,
                   lpips: Any = None, split: str | None = None, crop_border: int | None = None) -> dict[str, Any]:
    """Score bicubic and every method on ``pairs``; write parquet, summary.json and index.html.

    ``lpips`` is an :class:`~sr_pipeline.sr.judge.lpips_weights.LPIPSMetric`, an ``Unavailable`` (its
    reason is reported) or None (not computed). ``crop_border``: pixels left out at each border by
    PSNR-Y and SSIM-Y (default ``scale``; 0 is pyiqa's convention). Returns the summary.
    """
    from tqdm import tqdm

    from sr_pipeline.evaluation.report_page import render_benchmark_page
    from sr_pipeline.sr.judge.scoring import score_pairs

    # one tick per scored output (bicubic included), on a terminal only, like upscale's
    with tqdm(total=len(pairs) * (len(methods) + 1), unit="output", file=sys.stderr, disable=None,
              dynamic_ncols=True) as bar:
        scores = score_pairs(pairs, methods, scale, lpips=lpips, split=split,
                             on_output=lambda *_: bar.update(1), crop_border=crop_border)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_parquet(scores.rows, out_dir / "metrics.parquet")
    write_json(out_dir / "summary.json", scores.summary)
    write_bytes(out_dir / "index.html", render_benchmark_page(scores).encode())
    return scores.summary


def evaluate_folder(pairs_dir: Path, out_dir: Path, split: str = "all", scale: int = 4,
                    extra_methods: dict[str, Method] | None = None, lpips: Any = None,
                    crop_border: int | None = None) -> dict[str, Any]:
    """:func:`find_pairs` + :func:`evaluate_pairs`, loading LPIPS-alex unless a metric is given."""
    pairs = find_pairs(pairs_dir, split)
    if lpips is None:
        from sr_pipeline.sr.judge.lpips_weights import load_lpips

        lpips = load_lpips()
    return evaluate_pairs(pairs, dict(extra_methods or {}), scale, out_dir, lpips=lpips, split=split,
                          crop_border=crop_border)


def model_methods(models: list[Path], teacher: Path | None = None, steps: int | None = None,
                  device: str = "cpu", noise_scales: list[float] | None = None,
                  self_ensembles: list[int] | None = None) -> dict[str, Method]:
    """name -> LR->SR callable: each student with 1 step, the teacher with ``steps`` (default T). Each
    model runs at its own start noise, or at each of ``noise_scales`` (names then end in " noise S"),
    and alone, or at each of ``self_ensembles`` (n > 1 adds " x{n} ensemble" to the name)."""
    from sr_pipeline.sr.models.checkpoints import load_sr_model, model_version, read_info
    from sr_pipeline.sr.serve.upscaler import Upscaler

    scales: list[float | None] = list(noise_scales) if noise_scales else [None]
    ensembles = list(self_ensembles) if self_ensembles else [1]
    methods: dict[str, Method] = {}

    def add(base: str, model_dir: Path, steps: int) -> None:
        model = load_sr_model(Path(model_dir), device)
        for s in scales:
            for n in ensembles:
                name = (base if s is None else f"{base} noise {s:g}") + ("" if n == 1 else f" x{n} ensemble")
                methods[name] = Upscaler(model, device=device, steps=steps, noise_scale=s, self_ensemble=n)

    for model_dir in models:
        add(f"{read_info(Path(model_dir)).get('kind', 'model')}:{model_version(Path(model_dir))}", model_dir, 1)
    if teacher is not None:
        if steps is None:
            steps = int(json.loads((Path(teacher) / "scheduler_config.json").read_text())["num_steps"])
        add(f"teacher-{steps}step", teacher, steps)
    return methods


def check_pairs(pairs: list[Pair], scale: int) -> None:
    """Every pair is two readable images, HR ``scale`` times LR (headers only): a ``UsageError`` naming
    the first that is not, before anything is loaded or scored."""
    from PIL import Image, UnidentifiedImageError

    for pair in pairs:
        sizes = []
        for path in (pair.hr_path, pair.lr_path):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except (UnidentifiedImageError, OSError) as exc:
                detail = ("no image format recognised" if isinstance(exc, UnidentifiedImageError)
                          else exc.strerror or str(exc))
                raise UsageError(f"{path} is not a readable image ({detail}); fix or remove it "
                                 "(with its partner in the other folder)") from None
        (hw, hh), (lw, lh) = sizes
        if (hw, hh) != (lw * scale, lh * scale):
            raise UsageError(f"pair {pair.name}: HR {hw}x{hh} is not --scale {scale} times LR {lw}x{lh}; "
                             "pass the pairs' --scale or fix the pair")


def check_evaluate_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers, a --pairs or --out that is not a folder, and model folders without training.json."""
    pairs = Path(args.pairs)
    if not pairs.is_dir():
        state = "is a file" if pairs.exists() else "does not exist"
        raise UsageError(f"--pairs {pairs} {state}; pass a folder with HR/ and LR/ images matched by file name")
    check_output_folder("--out", Path(args.out), "metrics.parquet, summary.json and index.html")
    scale, steps = getattr(args, "scale", 4), getattr(args, "steps", None)
    if not (isinstance(scale, int) and scale >= 1):
        raise UsageError(f"--scale {scale} is out of range; it must be an integer >= 1 (the HR/LR size ratio)")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps {steps} is out of range; it must be an integer >= 1 (sampler steps)")
    for s in getattr(args, "noise_scale", None) or []:
        if not (math.isfinite(s) and s >= 0):
            raise UsageError(f"--noise-scale {s} is out of range; it must be a finite number >= 0")
    for model in getattr(args, "model", None) or []:
        check_model_folder("--model", model)
    if getattr(args, "teacher", None) is not None:
        check_model_folder("--teacher", args.teacher)


def cli_methods(args: argparse.Namespace, scale: int) -> dict[str, Method]:
    """``args.methods`` plus the ``--model``/``--teacher`` upscalers; one that cannot be loaded, or that
    upscales by another factor than ``scale``, is a ``UsageError``."""
    methods = dict(getattr(args, "methods", None) or {})
    if getattr(args, "model", None) or getattr(args, "teacher", None):
        from sr_pipeline.sr.models.devices import DeviceUnavailable, resolve_device

        try:
            device = resolve_device(getattr(args, "device", "auto"))
            methods |= model_methods(list(args.model or []), args.teacher, getattr(args, "steps", None), device,
                                     getattr(args, "noise_scale", None), getattr(args, "self_ensemble", None))
        except (FileNotFoundError, ValueError, OSError, DeviceUnavailable) as exc:
            raise UsageError(one_sentence(exc)) from None
    for name, fn in methods.items():
        if getattr(fn, "scale", scale) != scale:
            raise UsageError(f"--scale {scale} does not match {name}, which upscales x{fn.scale}; "
                             f"pass --scale {fn.scale} with pairs of that ratio")
    return methods


def evaluate_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline evaluate --pairs DIR --out DIR [--model M]... [--teacher T [--steps N]]``.

    ``args.methods`` (name -> callable LR -> SR), when set by a caller, is scored too. Bad input (see
    :func:`check_evaluate_args`, :func:`check_pairs`) is one sentence on stderr and exit code 2,
    before anything is scored or written.
    """
    from sr_pipeline.evaluation.report_page import text_table

    scale, split = getattr(args, "scale", 4), getattr(args, "split", "all") or "all"
    try:
        check_evaluate_args(args)
        check_pairs(find_pairs(Path(args.pairs), split), scale)
        methods = cli_methods(args, scale)
        summary = evaluate_folder(Path(args.pairs), Path(args.out), split=split, scale=scale, extra_methods=methods,
                                  crop_border=0 if getattr(args, "no_border_crop", False) else None)
    except (UsageError, EvaluationError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {one_sentence(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2))
    else:
        print(text_table(summary))
        print(f"report: {Path(args.out) / 'index.html'}")
    return 0


def _check_promoted_camera(layout: DataLayout, camera: str) -> None:
    """``--camera`` must name a field camera the camera registry lists or one this root's students or promotions
    belong to: a typing mistake would otherwise be recorded as a camera nothing serves, while the camera meant
    kept its student."""
    from sr_pipeline.common.cameras import CAMERA_ID_RE, load_registry
    from sr_pipeline.storage.registry import list_models, promotions

    known = {r["camera"] for r in list_models(layout, kind="student")} | {e.get("camera") for e in promotions(layout)}
    try:
        known |= set(load_registry().ids("field_lr"))
    except ValueError:  # a broken registry is named where it is used; the root's own cameras still count
        pass
    known = sorted(k for k in known if isinstance(k, str) and CAMERA_ID_RE.match(k))
    if camera not in known:
        raise UsageError(f"--camera {camera!r} is not a known field camera (known: {', '.join(known) or 'none'}); "
                         "nothing was promoted")


def promote_cli(args: argparse.Namespace, report: Callable[..., Any] | None = None) -> int:
    """``sr-pipeline promote VERSION [--reason TEXT] [--json]``: make an existing student the promoted
    one of its field camera (the rollback: promote the previous version). Recorded in the append-only
    promotions log; ``report(entry, layout, only_if_behind)`` (the Dagster side passes one) tells the orchestrator
    and returns where it reported (``.home``) or why it did not (``.why_not``). Promoting the promoted student
    again records nothing and reports it only to an instance that does not show it yet."""
    from sr_pipeline.evaluation.promotion import ForeignInstance, find_student, promote_version
    from sr_pipeline.sr.models.checkpoints import CorruptModelInfo
    from sr_pipeline.storage.registry import list_models, missing_folder_message, missing_promotions, promotions

    layout = args.layout
    try:
        row = find_student(layout, args.version)
    except CorruptModelInfo as exc:  # one damaged folder is named, never a traceback that blocks a rollback
        raise UsageError(f"{exc}; until then no student can be promoted by hand") from None
    if row is None:
        gone = [e for e in missing_promotions(layout) if e["version"] == args.version]
        if gone:  # the log still serves it, but there is nothing to serve
            raise UsageError(f"no student {args.version!r} under {layout.models / 'student'}: "
                             + missing_folder_message(layout, gone[-1]))
        print(f"error: no student {args.version!r} under {layout.models / 'student'} (see `sr-pipeline models`)",
              file=sys.stderr)
        return 2
    camera = getattr(args, "camera", None)
    if row.get("camera") and camera and camera != row["camera"]:
        print(f"error: student {row['version']} was trained for field camera {row['camera']!r}, not {camera!r}",
              file=sys.stderr)
        return 2
    if camera:  # a student of no camera (the fixed-degradation challenger) is promoted for the camera named
        _check_promoted_camera(layout, camera)
        row = row | {"camera": camera}
    elif not row.get("camera") and (any(e.get("camera") for e in promotions(layout))
                                    or any(r.get("camera") for r in list_models(layout, kind="student"))):
        # a root whose students belong to cameras: a camera-less promotion would serve every camera with it
        print(f"error: student {row['version']} belongs to no field camera (the fixed-degradation challenger, or "
              "a student trained before cameras were recorded); say which camera it should serve with --camera", file=sys.stderr)
        return 2
    reason = getattr(args, "reason", None) or "manual promotion with sr-pipeline promote"
    gone = missing_promotions(layout, row.get("camera"))  # the promotion now in force names a missing folder
    entry = promote_version(layout, row, reason)
    current = entry or promotions(layout, row.get("camera"))[-1]
    home, why_not, failed = None, None, False
    try:
        if report:
            home, why_not = report(current | {"path": str(layout.resolve(current["path"]))}, layout, entry is None)
    except ForeignInstance as exc:  # another data root's instance: left alone, and said why
        why_not, failed = str(exc), True
    except Exception as exc:  # the promotion is recorded; the UI only misses the event
        why_not, failed = f"could not report the promotion to Dagster ({type(exc).__name__}: {exc})", True
    camera = f" of field camera {row['camera']}" if row.get("camera") else ""
    if getattr(args, "json", False):
        print(json.dumps(current | {"path": layout.relative(current["path"]), "recorded_now": entry is not None,
                                    "dagster_home": str(home) if home else None, "dagster_not_reported": why_not,
                                    # the promotion it replaced named a folder that is gone (said in words below)
                                    "replaced_missing": [{"version": e["version"], "path": layout.relative(e["path"])}
                                                         for e in gone] if entry is not None else []},
                         indent=2))
        return 0
    if entry is None:
        print(f"{row['version']} is already the promoted student{camera}; nothing recorded"
              + (f"; reported to Dagster in {home}, which did not show it yet" if home else ""))
    else:
        whose = f"field camera {entry['camera']}'s images" if entry.get("camera") else "the field images"
        print(f"promoted student {entry['version']} ({reason}); the archive uses it for {whose} from now on"
              + (f"; reported to Dagster in {home}" if home else "")
              + "".join(f"; the promotion it replaces ({e['version']}) named {layout.relative(e['path'])}, which is "
                        "missing" for e in gone))
    if why_not and (entry is not None or failed):  # re-promoting changes nothing: only a failure is worth a word
        print(f"warning: not reported to Dagster: {why_not}", file=sys.stderr)
    return 0
