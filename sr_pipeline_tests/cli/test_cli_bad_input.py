"""Every command of ``sr-pipeline`` answers bad input with one sentence on stderr and exit code 2.

The commands are discovered from :func:`sr_pipeline.cli.build_parser`, so a new command is walked
too: it gets the generic cases (an unknown option, each required option left out, each numeric
option given a word, a negative number and, unless it allows it, zero) and the test fails until it
has an entry in ``CASES`` (its own bad paths, files and folders).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_pipeline.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]

# Numeric options for which 0 is a meaningful value; every other numeric option refuses it.
ZERO_OK = {"--seed", "--min-age", "--noise-scale", "--overlap", "--memory-budget"}


class Files:
    """The bad (and good) things the cases point at, all under one tmp folder."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.data.mkdir()
        self.image = self._png(root / "in.png", 8)
        self.a_file = root / "plain.txt"
        self.a_file.write_text("not an image, not a folder\n")
        self.missing = root / "no-such-thing"
        self.folder = root / "a-folder"
        self.folder.mkdir()
        self.pairs = self._pairs(root / "pairs")
        self.bad_pairs = self._pairs(root / "bad-pairs")
        (self.bad_pairs / "HR" / "zz.png").write_bytes(b"this is not a png")
        (self.bad_pairs / "LR" / "zz.png").write_bytes(b"nor is this")
        self.cameras = root / "cameras.yaml"
        shutil.copy(REPO / "configs" / "cameras.yaml", self.cameras)
        self.corrupt_yaml = root / "corrupt.yaml"
        self.corrupt_yaml.write_text("cameras: [unclosed\n  role: {\n")
        self.profile = REPO / "configs" / "cpu-demo.yaml"
        self.no_info_model = root / "model-without-info"
        self.no_info_model.mkdir()
        (self.no_info_model / "config.json").write_text("{}")
        self.src = root / "src"
        self.src.mkdir()
        self._png(self.src / "a.png", 16)
        self.thresholds = {}  # what is wrong -> a consistency.json with that problem
        for name, body in (("corrupt", "{not json"), ("negative", {"pixel": -1}), ("nan", {"peak": float("nan")}),
                           ("unknown", {"sharre": 0.1}), ("share", {"share": 1.0}), ("no-cameras", None)):
            path = root / f"thresholds-{name}.json"
            path.write_text(body if isinstance(body, str) else json.dumps({"cameras": {"all": body}} if body
                                                                          else {"thresholds": {}}))
            self.thresholds[name] = path

    @staticmethod
    def _png(path: Path, side: int) -> Path:
        pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        return path

    def _pairs(self, root: Path) -> Path:
        for name, side in (("HR", 32), ("LR", 8)):
            (root / name).mkdir(parents=True)
            self._png(root / name / "a1.png", side)
        return root


def _bases(f: Files) -> dict[str, list[str]]:
    """Per command, an argument list that reaches the handler; it fails fast (a model folder without
    training.json, an empty data root), so a wrongly accepted bad value fails the test quickly."""
    return {
        "demo-data": ["demo-data"],
        "demo": ["demo"],
        "ingest": ["ingest", str(f.src), "--camera", "ref_cam", "--cameras", str(f.cameras)],
        "doctor": ["doctor"],
        "train teacher": ["train", "teacher", "--config", str(f.profile)],
        "train colearn": ["train", "colearn", "--config", str(f.profile), "--teacher", str(f.no_info_model)],
        "upscale": ["upscale", str(f.image), "--out", str(f.root / "up"), "--model", str(f.no_info_model)],
        "evaluate": ["evaluate", "--pairs", str(f.pairs), "--out", str(f.root / "ev"), "--model", str(f.no_info_model)],
        "models": ["models"],
        "promote": ["promote", "no-such-version"],
        "lpips-weights": ["lpips-weights"],
        "consistency": ["consistency", "--lr", str(f.image), "--sr", str(f.image), "--model", str(f.no_info_model)],
    }


def _judge_cases(f: Files, base: list[str]) -> list[tuple[list[str], str]]:
    """Bad camera models and thresholds files, refused alike by every command that judges outputs."""
    return [
        ([*base, "--camera-model", str(f.missing)], str(f.missing)),
        ([*base, "--camera-model", str(f.a_file)], str(f.a_file)),
        ([*base, "--camera-model", str(f.folder)], str(f.folder)),
        ([*base, "--consistency-thresholds", str(f.missing)], str(f.missing)),
        ([*base, "--consistency-thresholds", str(f.folder)], str(f.folder)),
        *[([*base, "--consistency-thresholds", str(path)], str(path)) for path in f.thresholds.values()],
    ]


def _cases(f: Files) -> dict[str, list[tuple[list[str], str]]]:
    """Per command: (argument list, what stderr must name). The --data root is prepended by the runner."""
    b = _bases(f)
    return {
        "demo-data": [(["--data", str(f.a_file), *b["demo-data"]], str(f.a_file))],
        # Only cases refused before the demo starts (it runs the whole pipeline otherwise).
        "demo": [(["demo", "--fast"], "--fast")],
        "ingest": [
            (["ingest", str(f.missing), "--camera", "ref_cam", "--cameras", str(f.cameras)], str(f.missing)),
            (["ingest", str(f.a_file), "--camera", "ref_cam", "--cameras", str(f.cameras)], str(f.a_file)),
            (["ingest", str(f.src), "--camera", "no_such_cam", "--cameras", str(f.cameras)], "no_such_cam"),
            (["ingest", str(f.src), "--camera", "ref_cam", "--cameras", str(f.corrupt_yaml)], str(f.corrupt_yaml)),
            (["ingest", str(f.src), "--camera", "ref_cam", "--cameras", str(f.missing)], str(f.missing)),
            (["ingest", str(f.src), "--camera", "ref_cam", "--cameras", str(f.folder)], str(f.folder)),
        ],
        "doctor": [
            (["doctor", "--min-age", "nan"], "nan"),
            (["--data", str(f.missing), "doctor"], str(f.missing)),
            (["--data", str(f.missing), "doctor", "--finish"], str(f.missing)),
            (["doctor", "--finish", "--cameras", str(f.missing)], str(f.missing)),
            (["doctor", "--finish", "--cameras", str(f.corrupt_yaml)], str(f.corrupt_yaml)),
        ],
        "train teacher": [
            (["train", "teacher", "--config", str(f.missing)], str(f.missing)),
            (["train", "teacher", "--config", str(f.folder)], str(f.folder)),
            (["train", "teacher", "--config", str(f.corrupt_yaml)], str(f.corrupt_yaml)),
            ([*b["train teacher"], "--out", str(f.a_file)], str(f.a_file)),
            ([*b["train teacher"], "--run-dir", str(f.a_file)], str(f.a_file)),
        ],
        "train colearn": [
            (["train", "colearn", "--config", str(f.corrupt_yaml)], str(f.corrupt_yaml)),
            (b["train colearn"], str(f.no_info_model)),
            (["train", "colearn", "--config", str(f.profile), "--teacher", str(f.missing)], str(f.missing)),
            (["train", "colearn", "--config", str(f.profile), "--teacher", str(f.a_file)], str(f.a_file)),
            ([*b["train colearn"], "--out", str(f.a_file)], str(f.a_file)),
            ([*b["train colearn"], "--downsampler-out", str(f.a_file)], str(f.a_file)),
        ],
        "upscale": [
            (["upscale", str(f.missing), "--out", str(f.root / "up")], str(f.missing)),
            (["upscale", str(f.image), "--out", str(f.a_file)], str(f.a_file)),
            (b["upscale"], str(f.no_info_model)),
            (["upscale", str(f.image), "--out", str(f.root / "up"), "--model", str(f.a_file)], str(f.a_file)),
            ([*b["upscale"], "--consistency-map", str(f.a_file)], str(f.a_file)),
            ([*b["upscale"], "--consistency-map", str(f.folder), "--no-consistency"], "--no-consistency"),
            *_judge_cases(f, b["upscale"]),
        ],
        "evaluate": [
            (["evaluate", "--pairs", str(f.missing), "--out", str(f.root / "ev")], str(f.missing)),
            (["evaluate", "--pairs", str(f.a_file), "--out", str(f.root / "ev")], str(f.a_file)),
            (["evaluate", "--pairs", str(f.folder), "--out", str(f.root / "ev")], str(f.folder)),
            (["evaluate", "--pairs", str(f.pairs), "--out", str(f.a_file)], str(f.a_file)),
            (["evaluate", "--pairs", str(f.pairs), "--out", str(f.a_file / "sub")], str(f.a_file)),
            (["evaluate", "--pairs", str(f.bad_pairs), "--out", str(f.root / "ev")], "zz.png"),
            (["evaluate", "--pairs", str(f.pairs), "--out", str(f.root / "ev"), "--scale", "3"], "--scale 3"),
            (b["evaluate"], str(f.no_info_model)),
            (["evaluate", "--pairs", str(f.pairs), "--out", str(f.root / "ev"), "--teacher", str(f.no_info_model)],
             str(f.no_info_model)),
        ],
        "models": [(["--data", str(f.a_file), "models"], str(f.a_file)),
                   (["--data", str(f.missing), "models"], str(f.missing)),
                   (["--data", str(f.missing), "models", "--json"], str(f.missing))],
        "promote": [(b["promote"], "no-such-version"),
                    (["--data", str(f.a_file), "promote", "s1"], str(f.a_file))],
        "lpips-weights": [(["lpips-weights", "--sdist"], "--sdist")],
        "consistency": [
            (["consistency", "--lr", str(f.missing), "--sr", str(f.image)], str(f.missing)),
            (["consistency", "--lr", str(f.image), "--sr", str(f.missing)], str(f.missing)),
            (["consistency", "--lr", str(f.image), "--sr", str(f.image), "--map", str(f.a_file)], str(f.a_file)),
            (b["consistency"], str(f.no_info_model)),
            (["consistency", "--lr", str(f.image), "--sr", str(f.image), "--model", str(f.missing)], str(f.missing)),
            *_judge_cases(f, ["consistency", "--lr", str(f.image), "--sr", str(f.image)]),
        ],
    }


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command ("train teacher", "upscale", ...) -> its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix.strip(): parser}
    found: dict[str, argparse.ArgumentParser] = {}
    for name, child in subs[0].choices.items():
        found |= _commands(child, f"{prefix} {name}")
    return found


def _numeric(action: argparse.Action) -> str | None:
    """'int' or 'float' for an option that takes a number (argparse's own types or the CLI's checked ones)."""
    kind = getattr(action.type, "number_kind", None) or getattr(action.type, "__name__", None)
    return kind if kind in ("int", "float") and action.option_strings else None


def _generic_cases(parser: argparse.ArgumentParser, base: list[str]) -> list[tuple[list[str], tuple[str, ...]]]:
    cases: list[tuple[list[str], tuple[str, ...]]] = [([*base, "--no-such-option"], ("--no-such-option",))]
    for action in parser._actions:
        if action.required and action.option_strings:
            opt = action.option_strings[0]
            i = base.index(opt)
            cases.append(([*base[:i], *base[i + 2:]], (opt,)))
        kind = _numeric(action)
        if kind is None:
            continue
        opt = action.option_strings[0]
        bad = ["many", "-3", *(["nan", "inf"] if kind == "float" else []), *([] if opt in ZERO_OK else ["0"])]
        cases += [([*base, f"{opt}={value}"], (opt, value)) for value in bad]
    return cases


def _run(argv: list[str], capsys) -> tuple[int | str, str]:
    """(exit code, stderr); an exception that escapes ``main`` (a traceback for the operator) is
    returned as its name in place of the code."""
    try:
        code = main(argv)
    except Exception as exc:
        code = f"{type(exc).__name__} ({exc})"
    return code, capsys.readouterr().err


def test_every_command_answers_bad_input_with_one_sentence(tmp_path, capsys):
    files = Files(tmp_path)
    commands = _commands(build_parser())
    bases, cases = _bases(files), _cases(files)
    unlisted = sorted(set(commands) - set(cases) | set(commands) - set(bases))
    assert not unlisted, f"commands without bad-input cases in {__name__}: {unlisted}"
    failures = []
    for name, parser in commands.items():
        for argv, named in [(a, (n,)) for a, n in cases[name]] + _generic_cases(parser, bases[name]):
            if argv[0] != "--data":
                argv = ["--data", str(files.data), *argv]
            code, err = _run(argv, capsys)
            lines = err.strip().splitlines()
            problems = [what for what, bad in (
                (f"exit code {code}, not 2", code != 2),
                (f"{len(lines)} lines on stderr", len(lines) > 2),
                (f"stderr does not name {named!r}", not all(n in err for n in named)),
                ("a traceback", "Traceback" in err),
            ) if bad]
            if problems:
                failures.append(f"sr-pipeline {' '.join(argv[2:])}: {', '.join(problems)}; stderr: {err.strip()!r}")
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures)


def test_the_console_command_says_one_line_without_a_traceback(tmp_path):
    """The same through a real process (what an operator's shell sees), on cases that stop before torch loads."""
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for argv, named in ((["--data", str(a_file), "models"], str(a_file)),
                        (["evaluate", "--pairs", str(tmp_path), "--out", str(tmp_path), "--scale", "0"], "--scale")):
        run = subprocess.run([sys.executable, "-m", "sr_pipeline.cli", *argv], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert run.returncode == 2 and named in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


def test_a_bug_in_a_handler_is_not_hidden_as_a_usage_error(tmp_path, monkeypatch):
    """Only UsageError becomes a sentence: any other exception escapes ``main`` with its traceback."""
    from sr_pipeline.storage import registry

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(registry, "run_cli", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["--data", str(tmp_path), "models"])


def test_a_permission_error_is_one_sentence_not_a_traceback(tmp_path, capsys, monkeypatch):
    from sr_pipeline import cli

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "models" / "promotions.json"))

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        action.set_defaults(func=denied)
    assert cli.main(["--data", str(tmp_path), "models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: permission denied") and "promotions.json" in err and err.count("\n") == 1
