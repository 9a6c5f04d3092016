"""``sr-pipeline upscale``: image files or folders in, upscaled PNGs out, each published atomically.

- Resumable: an existing output whose provenance text says it is a finished output of the same
  source (sha256) by the same model version and sampler settings is kept and counted as
  ``skipped``, so rerunning after a crash finishes the rest and exits 0, once it decodes whole (a
  damaged one is made again). One that another run publishes meanwhile is ``skipped`` as well. Any
  other existing output is a conflict (a failure naming what differs) unless ``--overwrite``.
- Never published: an output with NaN or infinities, or flat where its input is not (the failure
  names the setting to change). Files under ``--out`` and the heat-map folder are never inputs.
- Usage errors (a bad number, ``--out`` naming a file, a missing input, an unreadable model folder,
  camera model or thresholds file) are one sentence on stderr and exit code 2, before any output is
  written. Files that cannot be read or written are reported per file and make the exit code 1.
- Consistency: each output is judged against its input while its rows are written (the
  camera model applied to the output should give back the input; verdict ``ok`` / ``check`` in the
  PNG text, the ``--json`` row and the summary); a kept output reports the verdict stored in it.
  ``check`` is not a failure: the exit code stays 0. ``--enforce-consistency`` projects the output
  back towards its input through the same camera model, which holds the whole output in memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from sr_pipeline.serving.audit import (
    check_camera_id, check_judge_args, describe_check, load_consistency_check, map_path, measure_saved, write_map,
)
from sr_pipeline.serving.consistency import ConsistencyCheck, consistency_text, stored_consistency
from sr_pipeline.sr.serve.consistency import Camera, Consistency, ConsistencyPass, enforce_consistency
from sr_pipeline.sr.images.decode import IMAGE_EXTENSIONS, ImageRejected, SourceImage
from sr_pipeline.sr.images.png_stream import MODE_CHANNELS, TEXT_PREFIX, PngStreamWriter, png_complete, png_text
from sr_pipeline.sr.serve.upscaler import NonFiniteOutput, TileSettings, Upscaler, iter_output_rows, provenance_text
from sr_pipeline.common.errors import UsageError, check_output_folder
from sr_pipeline.sr.models.checkpoints import check_model_folder
from sr_pipeline.common.atomic import atomic_write
from sr_pipeline.sr.judge.wording import count


# ---------------------------------------------------------------- writing one output


def write_upscaled_png(upscaler: Upscaler, src: SourceImage, target: Path, text: dict[str, str], *,
                       drop_alpha: bool = False, overwrite: bool = False, compress_level: int = 6,
                       progress: Callable[[int], None] | None = None,
                       on_rows: Callable[[int, np.ndarray], None] | None = None,
                       consistency: ConsistencyPass | None = None) -> tuple[str, Consistency | None]:
    """Upscale ``src`` into the PNG ``target`` (temp file, then renamed); returns the output mode and,
    with ``consistency`` (a pass started on ``src``), its result, which is also written into the PNG.

    Without ``overwrite`` an existing target is never replaced, even one that appears meanwhile.
    ``on_rows(first_row, rows)`` sees every output band (for previews). The consistency pass sees
    the rows as written, so an audit of the file finds the same figures.
    """
    target = Path(target)
    mode = src.output_mode(drop_alpha)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass --overwrite to replace it)")
    held = 0 if consistency is None else ConsistencyPass.held_bytes(consistency.camera, src.height, src.width)
    found: list[Consistency] = []

    def write(fh) -> None:
        writer = PngStreamWriter(fh, src.width * upscaler.scale, src.height * upscaler.scale,
                                 MODE_CHANNELS[mode], src.bit_depth, text, compress_level)
        lo, hi = None, None
        for rows in iter_output_rows(upscaler, src, drop_alpha=drop_alpha, progress=progress, held=held):
            if on_rows is not None:
                on_rows(writer.rows_written, rows)
            if consistency is not None:
                consistency.feed(rows)
            writer.write_rows(rows)
            colour = rows[..., :MODE_CHANNELS[src.output_mode(True)]]
            lo = colour.min() if lo is None else min(lo, colour.min())
            hi = colour.max() if hi is None else max(hi, colour.max())
        full = 65535 if src.colour.dtype == np.uint16 else 255
        if lo == hi and int(src.colour.max()) - int(src.colour.min()) > full // 100:  # never published
            raise DegenerateOutput(f"the output of {src.width}x{src.height} input is one flat value ({lo}) where "
                                   f"the input is not; {_blame(upscaler)}")
        if consistency is not None:
            found.append(consistency.finish())
        writer.close(consistency_text(found[0]) if found else None)

    try:  # the file is fsynced; its folder is not (one per archived image would cost more than it buys)
        atomic_write(target, write, sync_dir=False, exclusive=not overwrite)
    except FileExistsError:
        raise FileExistsError(f"{target} exists (pass --overwrite to replace it)") from None
    except NonFiniteOutput as exc:
        raise DegenerateOutput(f"{exc}; {_blame(upscaler)}") from None
    return mode, (found[0] if found else None)


class DegenerateOutput(ValueError):
    """An output that must not be published: non-finite, or flat where its input is not."""


def _blame(upscaler) -> str:
    """The setting most likely at fault for a degenerate output, as the fix to try."""
    inner = getattr(upscaler, "upscaler", upscaler)
    if inner.noise_scale > 0:
        return f"--noise-scale {inner.noise_scale:g} swamps the input: lower it (0 starts at the mean)"
    return f"the model {inner.model.path} gives no usable output: check it (`sr-pipeline models`) or pass another --model"


def output_intact(path: Path) -> str | None:
    """None when the PNG at ``path`` decodes whole with every chunk's CRC right; otherwise why not."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()  # every chunk's CRC, image data included
        with Image.open(path) as im:
            im.load()  # and the pixels inflate to the full size
    except Exception as exc:  # any decoder complaint means the file is not what we wrote
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


# ---------------------------------------------------------------- enforced consistency

ENFORCED_KEY = f"{TEXT_PREFIX}consistency_enforced"
_ENFORCE_HR_COPIES = 5  # HR float images alive while projecting: the output, x, up(residual), G's unshuffle, slack


class EnforcedUpscaler:
    """An :class:`Upscaler` whose rows are projected back towards the input through ``camera``
    (:func:`enforce_consistency`) before they leave. The projection needs the whole HR output, so
    it is held in memory (float) and counted in the memory plan; what does not fit is refused."""

    def __init__(self, upscaler: Upscaler, camera: Camera, iterations: int):
        if camera.scale != upscaler.scale:
            raise ValueError(f"the camera model is x{camera.scale}, the model x{upscaler.scale}")
        self.upscaler, self.camera, self.iterations = upscaler, camera, iterations
        self.scale = upscaler.scale

    def held_bytes(self, height: int, width: int) -> int:
        hr = 3 * height * width * self.scale**2 * 4
        return _ENFORCE_HR_COPIES * hr + ConsistencyPass.held_bytes(self.camera, height, width)

    def iter_rows(self, lr: np.ndarray, progress: Callable[[int], None] | None = None, *,
                  held: int = 0) -> Iterator[np.ndarray]:
        """As :meth:`Upscaler.iter_rows`, projected (float32 bands in [-1, 1])."""
        lr = lr if lr.ndim == 3 else lr[:, :, None]
        h, w, c = lr.shape
        held += self.held_bytes(h, w)
        try:
            self.upscaler.plan(h, w, c, lr.dtype.itemsize, held=held)
        except MemoryError:
            budget = self.upscaler.memory_budget / 2**30
            raise MemoryError(f"--enforce-consistency holds the whole {w * self.scale}x{h * self.scale} output in "
                              f"memory (~{held / 2**20:.0f} MiB with the rest), over the --memory-budget of "
                              f"{budget:g} GiB: raise --memory-budget or leave out --enforce-consistency") from None
        x = np.empty((h * self.scale, w * self.scale, 3), dtype=np.float32)
        r = 0
        for rows in self.upscaler.iter_rows(lr, progress, held=held):
            x[r:r + len(rows)] = rows
            r += len(rows)
        maxval = 65535.0 if lr.dtype == np.uint16 else 255.0
        y = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1).mul_(2.0 / maxval).sub_(1.0)
        out = enforce_consistency(self.camera, torch.from_numpy(x).permute(2, 0, 1)[None],
                                  y.expand(3, -1, -1)[None], self.iterations)[0].permute(1, 2, 0)
        del x
        band = max(1, self.upscaler.tiles.tile * self.scale)
        for r in range(0, out.shape[0], band):
            yield np.ascontiguousarray(out[r:r + band].numpy())


def enforced_text(camera: Camera, iterations: int) -> str:
    """The PNG text that tells an enforced output from a plain one (resume compares it)."""
    return f"{camera.name}, {iterations} iteration{'s' if iterations != 1 else ''}"


# ---------------------------------------------------------------- resuming


def _alpha_choice(text: dict[str, str]) -> str | None:
    notes = text.get(f"{TEXT_PREFIX}notes", "").split(",")
    return next((n for n in notes if n in ("alpha_bicubic", "alpha_dropped")), None)


def existing_conflict(target: Path, text: dict[str, str]) -> str | None:
    """None when ``target`` is a finished output that ``text`` (the provenance of the output we would
    write) describes as well; otherwise why it differs, as a sentence."""
    replace = "pass --overwrite to replace it"
    try:  # a cut file still carries the provenance written before its image data: ours, to be made again
        found = png_text(target, partial=not png_complete(target))
    except Exception:  # unreadable: not ours to judge, and not ours to replace
        found = {}
    if f"{TEXT_PREFIX}source_sha256" not in found:
        return f"{target} exists and is not an output of sr-pipeline upscale ({replace})"
    sha = f"{TEXT_PREFIX}source_sha256"
    if found[sha] != text[sha]:
        return (f"{target} exists and was made from another source (sha256 {found[sha][:12]}, this one is "
                f"{text[sha][:12]}); {replace}")
    version = f"{TEXT_PREFIX}model_version"
    if found.get(version) != text[version]:
        return f"{target} exists and was made by model {found.get(version)}, not {text[version]}; {replace}"
    for key, label in (("steps", "steps"), ("scale", "scale"), ("noise", "noise"),
                       ("self_ensemble", "self-ensemble"), ("consistency_enforced", "enforced consistency")):
        old, new = found.get(TEXT_PREFIX + key), text.get(TEXT_PREFIX + key)
        if old != new:
            return f"{target} exists and was made with {label} {old or 'none'}, not {new or 'none'}; {replace}"
    if _alpha_choice(found) != _alpha_choice(text):
        return f"{target} exists and was made with {_alpha_choice(found)}, not {_alpha_choice(text)}; {replace}"
    return None


# ---------------------------------------------------------------- the command


def _inside(path: Path, folders: list[Path]) -> bool:
    real = path.parent.resolve() / path.name  # the entry itself is not followed (it may be a looping link)
    return any(real == f or f in real.parents for f in folders)


def plan_outputs(inputs: list[Path], out: Path, scale: int, *, exclude: tuple[Path, ...] = (),
                 skipped: list[tuple[Path, str]] | None = None) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a folder's images keep their sub-folders under ``out``.

    Files under ``out`` (and the ``exclude`` folders, such as the heat maps') are never inputs, so an
    ``--out`` inside an input folder does not upscale its own outputs again. Entries of a folder that
    are not taken (links that loop or point nowhere, links to folders, special files) are appended to
    ``skipped`` with the reason.
    """
    own = [Path(f).resolve() for f in (out, *exclude)]
    pairs = []
    for p in inputs:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.name.startswith(".") or _inside(f, own):
                    continue
                if f.is_file():
                    if f.suffix.lower() in IMAGE_EXTENSIONS:
                        rel = f.relative_to(p)
                        pairs.append((f, out / rel.parent / f"{f.stem}_x{scale}.png"))
                elif skipped is not None and (f.is_symlink() or not f.is_dir()):
                    skipped.append((f, _not_taken(f)))
        else:
            pairs.append((p, out / f"{p.stem}_x{scale}.png"))
    return pairs


def _not_taken(path: Path) -> str:
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "a link that loops; not followed"
        except OSError:
            return "a link to nothing; not followed"
        return "a link to a folder; links to folders are not followed"
    return "not a regular file"


def _out_of_range(option: str, value, allowed: str) -> UsageError:
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return UsageError(f"{option} {shown} is out of range: it must be {allowed}")


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers, missing inputs and an --out that cannot be a folder (``UsageError``)."""
    if args.tile < 1:
        raise _out_of_range("--tile", args.tile, ">= 1 (LR pixels per tile side)")
    if not 0 <= args.overlap < args.tile:
        raise _out_of_range("--overlap", args.overlap, f"in 0..{args.tile - 1} (below --tile {args.tile})")
    if args.batch < 1:
        raise _out_of_range("--batch", args.batch, ">= 1 (tiles per network call)")
    if not (math.isfinite(args.memory_budget) and args.memory_budget >= 0):
        raise _out_of_range("--memory-budget", args.memory_budget, "a finite number >= 0 (GiB; 0: no limit)")
    if args.steps is not None and args.steps < 1:
        raise _out_of_range("--steps", args.steps, ">= 1 (sampler steps)")
    if args.noise_scale is not None and not (math.isfinite(args.noise_scale) and args.noise_scale >= 0):
        raise _out_of_range("--noise-scale", args.noise_scale, "a finite number >= 0")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise UsageError(f"input {', '.join(missing)} does not exist" if len(missing) == 1
                         else f"inputs {', '.join(missing)} do not exist")
    check_output_folder("--out", Path(args.out), "the outputs, named <stem>_x<scale>.png")
    if args.consistency_map is not None:
        if args.no_consistency:
            raise UsageError("--consistency-map draws the consistency measure; leave out --no-consistency")
        check_output_folder("--consistency-map", Path(args.consistency_map),
                            "the heat maps, named <stem>_x<scale>_consistency.png")
    check_judge_args(args.camera_model, args.consistency_thresholds)


def _check_camera_registry() -> None:
    """The camera registry must be readable before the promoted student is served: a broken one is named
    (as ``--camera`` names it), never passed over in silence."""
    from sr_pipeline.common.errors import one_sentence
    from sr_pipeline.common.cameras import CameraRegistryError, load_registry

    try:
        load_registry()
    except CameraRegistryError as exc:
        raise UsageError(f"{one_sentence(exc)}; the promoted student is served per field camera of this registry: "
                         "fix the file ($SR_PIPELINE_CAMERAS, default configs/cameras.yaml) or pass --model DIR"
                         ) from None


def load_model(model_dir: Path, device: str):
    """A model folder loaded on ``device``; any failure (missing files, bad JSON, corrupt weights, no
    permission) is one :class:`UsageError` sentence naming the folder."""
    from sr_pipeline.sr.models.checkpoints import load_sr_model

    try:
        return load_sr_model(model_dir, device)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"cannot load the model in {model_dir} ({type(exc).__name__}: {detail})") from None


def load_upscaler(args: argparse.Namespace) -> Upscaler:
    """The model (``--model``, else the promoted student of ``args.layout``) with the run's settings."""
    from sr_pipeline.sr.models.devices import resolve_device
    from sr_pipeline.storage.registry import missing_folder_message, missing_promotions, promoted_student_for

    device = resolve_device(args.device)
    model_dir = args.model
    if model_dir is None:
        _check_camera_registry()  # with --camera or without: the promoted student is chosen against it
        try:
            model_dir = promoted_student_for(args.layout, args.camera)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        missing = missing_promotions(args.layout, args.camera) if model_dir is None else []
        if missing:  # promoted, but its folder is gone: say so, as `promote` and `models` do
            raise UsageError(missing_folder_message(args.layout, missing[0]) + "; or pass --model DIR")
        if model_dir is None:
            whose = f" for field camera {args.camera!r}" if args.camera else ""
            raise UsageError(f"no student has been promoted{whose} yet; pass --model DIR")
    model_dir = Path(model_dir)
    check_model_folder("--model", model_dir)
    check_camera_id(args.camera, model_dir, args.consistency_thresholds)
    if sys.stderr.isatty():  # a person waits: say what the seconds go to (a script keeps its one-line errors)
        print(f"loading the model in {model_dir} ...", file=sys.stderr, flush=True)
    model = load_model(model_dir, device)
    kind, num_steps = model.info.get("kind"), model.schedule.num_steps
    steps = args.steps if args.steps is not None else (num_steps if kind == "teacher" else 1)
    if steps > 1 and kind == "student":
        raise UsageError(f"{model_dir} is a single-step student; --steps > 1 needs a teacher (--model TEACHER_DIR)")
    if steps > num_steps:
        raise _out_of_range("--steps", steps, f"in 1..{num_steps} for {model_dir}")
    budget = None if args.memory_budget == 0 else int(args.memory_budget * 2**30)
    try:
        return Upscaler(model, device=device, steps=steps, seed=args.seed, noise_scale=args.noise_scale,
                        compile=args.compile, memory_budget=budget, self_ensemble=args.self_ensemble,
                        tiles=TileSettings(tile=args.tile, overlap=args.overlap, batch=args.batch))
    except ValueError as exc:  # a damaged training.json, a tile the model cannot take: one sentence
        raise UsageError(str(exc)) from None


def load_judge(args: argparse.Namespace, upscaler: Upscaler) -> ConsistencyCheck | None:
    """The consistency check of the run (None with ``--no-consistency`` and nothing to enforce)."""
    if args.no_consistency and not args.enforce_consistency:
        return None
    # The pass runs where the upscaler does; the enforced projection holds the whole output, which the
    # memory plan counts in host memory, so with it the camera stays on the CPU.
    device = "cpu" if args.enforce_consistency else upscaler.device
    return load_consistency_check(upscaler.model.path, upscaler.scale, args.camera_model, args.consistency_thresholds,
                                  device)


def _judged_row(result: Consistency, src: SourceImage, target: Path, args: argparse.Namespace) -> dict:
    row = result.record()
    if args.consistency_map is not None:
        rel = target.parent.relative_to(args.out)
        try:  # the output is published whatever becomes of its map: a lost map is its own failure
            row["consistency_map"] = str(write_map(result, src.colour, map_path(args.consistency_map, target, rel),
                                                   target))
        except OSError as exc:
            row["consistency_map_failed"] = f"{exc.strerror or exc}: {exc.filename or args.consistency_map}"
    return row


def _kept_consistency(check: ConsistencyCheck, src: SourceImage, target: Path, args: argparse.Namespace) -> dict:
    """A kept output's verdict: the one written into it by the same camera model, else (or when its
    heat map is wanted and missing) measured again from the file."""
    from sr_pipeline.sr.images.decode import read_image

    stored = stored_consistency(png_text(target))
    wanted_map = (None if args.consistency_map is None else
                  map_path(args.consistency_map, target, target.parent.relative_to(args.out)))
    if stored is not None and stored["consistency_camera"] == check.camera.name:
        if wanted_map is None:
            return stored
        if wanted_map.is_file():
            return {**stored, "consistency_map": str(wanted_map)}
    result = measure_saved(check, src.colour, read_image(target).colour, args.camera,
                           keep_map=wanted_map is not None)
    return _judged_row(result, src, target, args)


def _upscale_one(upscaler: Upscaler, path: Path, target: Path, args: argparse.Namespace,
                 progress: Callable[[int], None], check: ConsistencyCheck | None) -> dict:
    """Upscale one file, or keep its finished output; the row of the report without input/output."""
    from sr_pipeline.sr.images.decode import read_image

    t0 = time.perf_counter()
    src = read_image(path)
    extra = None
    if args.enforce_consistency:
        extra = {ENFORCED_KEY: enforced_text(check.camera, args.enforce_iterations)}
    text = provenance_text(upscaler, src, path.name, drop_alpha=args.drop_alpha, extra=extra)
    judge = check is not None and not args.no_consistency

    def kept(reason: str) -> dict:
        row = {"status": "skipped", "reason": reason}
        return {**row, **_kept_consistency(check, src, target, args)} if judge else row

    replace, redone = args.overwrite, None
    if target.exists() and not args.overwrite:
        conflict = existing_conflict(target, text)
        if conflict is not None:
            raise FileExistsError(conflict)
        damage = output_intact(target)
        if damage is None:
            return kept("already done, kept")
        replace, redone = True, f"the kept output was damaged ({damage}); made again"
    writer = EnforcedUpscaler(upscaler, check.camera, args.enforce_iterations) if args.enforce_consistency else upscaler
    cpass = check.start(src.colour, args.camera, keep_map=args.consistency_map is not None) if judge else None
    try:
        mode, result = write_upscaled_png(writer, src, target, text, drop_alpha=args.drop_alpha,
                                          overwrite=replace, progress=progress, consistency=cpass)
    except FileExistsError:  # another run published it meanwhile: the same output is done, not a conflict
        if existing_conflict(target, text) is None and output_intact(target) is None:
            return kept("done meanwhile by another run, kept")
        raise
    row = {"status": "upscaled", "mode": mode, "seconds": round(time.perf_counter() - t0, 3),
           "size": [src.width * upscaler.scale, src.height * upscaler.scale]}
    if redone:
        row["note"] = redone
    return row if result is None else {**row, **_judged_row(result, src, target, args)}


def _line(path: Path, target: Path, row: dict) -> str:
    if "reason" in row and row["status"] != "skipped":
        return f"{path}: {row['status']} ({row['reason']})"
    said = f"{path}: {row['status']}" + (f" ({row['reason']})" if "reason" in row else f" -> {target}")
    if "note" in row:
        said += f" ({row['note']})"
    if "consistency_map_failed" in row:
        said += f"; heat map not written ({row['consistency_map_failed']})"
    verdict = row.get("consistency_verdict")
    if verdict is not None:
        said += f"; consistency {verdict}" + (f": {row['consistency_reasons']}" if row["consistency_reasons"] else "")
    return said


def run_cli(args: argparse.Namespace) -> int:
    """Files or folders in, PNGs out; bad files are reported and skipped (exit 1), usage errors exit 2.
    A ``check`` verdict is reported and counted, not a failure."""
    from tqdm import tqdm

    from sr_pipeline.sr.images.decode import probe_size

    try:
        check_args(args)
        upscaler = load_upscaler(args)
        check = load_judge(args, upscaler)
    except ValueError as exc:  # UsageError, DeviceUnavailable, the Upscaler's own checks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    not_taken: list[tuple[Path, str]] = []
    maps = () if args.consistency_map is None else (args.consistency_map,)
    pairs = plan_outputs(list(args.inputs), args.out, upscaler.scale, exclude=maps, skipped=not_taken)
    for path, why in not_taken:
        print(f"{path}: skipped ({why})", file=sys.stderr)
    sizes = [probe_size(p) if p.is_file() else None for p, _ in pairs]
    tiles = [0 if size is None else upscaler.tile_count(size[1], size[0]) for size in sizes]
    results, counts, claimed = [], {"upscaled": 0, "skipped": 0, "failed": 0}, {}
    map_counts = {"maps_written": 0, "maps_failed": 0}
    bar = tqdm(total=sum(tiles), unit="tile", file=sys.stderr, disable=None, dynamic_ncols=True)
    for (path, target), n_tiles in zip(pairs, tiles):
        row = {"input": str(path), "output": str(target)}
        done = 0

        def advance(k: int) -> None:
            nonlocal done
            done += k
            bar.update(k)

        bar.set_description(path.name[:40])
        try:
            if target in claimed:
                raise FileExistsError(f"{claimed[target]} already writes {target}")
            claimed[target] = path
            row.update(_upscale_one(upscaler, path, target, args, advance, check))
        except (ImageRejected, FileExistsError, OSError, ValueError, MemoryError) as exc:
            row.update(status="failed", reason=str(exc))
        counts[row["status"]] += 1
        if "consistency_map" in row or "consistency_map_failed" in row:
            map_counts["maps_failed" if "consistency_map_failed" in row else "maps_written"] += 1
        bar.update(max(0, n_tiles - done))
        results.append(row)
        if not args.json:
            bar.write(_line(path, target, row), file=sys.stderr)
    bar.close()
    verdicts = {v: sum(row.get("consistency_verdict") == v for row in results) for v in ("ok", "check")}
    succeeded = counts["upscaled"] + counts["skipped"]
    if args.json:
        judged = None if check is None or args.no_consistency else describe_check(check, args.camera)
        print(json.dumps({"model": str(upscaler.model.path), "model_version": upscaler.version,
                          "steps": upscaler.steps, "consistency": judged, "files": results, **counts,
                          "succeeded": succeeded, **verdicts, **map_counts,
                          "not_taken": [{"input": str(p), "reason": why} for p, why in not_taken]}, indent=2))
    elif not pairs:
        print("error: no input images found", file=sys.stderr)
    elif check is not None and not args.no_consistency:
        print(f"{verdicts['check']} of {count(succeeded, 'output')} {'needs' if verdicts['check'] == 1 else 'need'} "
              "a person's look "
              f"(consistency check)", file=sys.stderr)
    return 1 if counts["failed"] or map_counts["maps_failed"] or not pairs else 0
