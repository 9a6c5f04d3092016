"""A hostile operator: every option, argument and environment setting of every command, given an
empty string, NaN, infinities, 1e26, a line break or an unknown camera, gets one line on stderr and
exit code 2, or a correct result (0 or 1) — never a traceback and never a hang.

Commands are discovered from the parser, run in-process (``cli.main``) from inside the test's own
tmp folder (a relative path such as ``nan`` is a legitimate name and lands there).
"""

from __future__ import annotations

import argparse
import signal

import pytest

from sr_pipeline.common.env_settings import ENV_SETTINGS, NUMERIC_SETTINGS
from sr_pipeline.cli import build_parser, main
from test_cli_bad_input import Files, _bases, _commands

HOSTILE = ["", " ", "nan", "-nan", "inf", "-inf", "1e26", "99999999999999999999999999", "a\nb", "bogus_cam"]
CASE_SECONDS = 120  # generous: the first torch import on a loaded machine takes tens of seconds


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {CASE_SECONDS} s")


def _run(argv: list[str], capsys) -> tuple[int | str, str]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        code = main(argv)
    except Exception as exc:  # a traceback for the operator, or a hang
        code = f"{type(exc).__name__} ({exc})"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, capsys.readouterr().err


def _valued(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positional arguments that take a value (flags and help left out)."""
    return [a for a in parser._actions if a.nargs != 0 and not isinstance(a, argparse._SubParsersAction)]


def _with(base: list[str], action: argparse.Action, value: str) -> list[str]:
    if action.option_strings:
        return [*base, f"{action.option_strings[0]}={value}"]
    slot = 2 if base[0] == "train" else 1  # a positional: the word right after the command's name
    return [*base[:slot], value, *base[slot + 1:]]


def _judge(argv: list[str], code, err: str) -> str | None:
    lines = [line for line in err.splitlines() if line.strip()]
    if not isinstance(code, int):
        return f"raised {code}"
    if "Traceback" in err:
        return "a traceback"
    if code == 2 and (len(lines) != 1 or not lines[0].startswith("error: ")):
        return f"exit 2 with {len(lines)} lines, not one `error: ...` line"
    if code not in (0, 1, 2):
        return f"exit code {code}"
    return None


def test_every_option_of_every_command_survives_hostile_values(tmp_path, capsys, monkeypatch):
    files = Files(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    bases = _bases(files)
    failures = []
    for name, parser in _commands(build_parser()).items():
        for action in _valued(parser):
            if "--data" in action.option_strings and name != "models":
                continue  # a relative --data such as `nan` is a fine root: `demo` would run the whole pipeline in it
            legit = name.startswith("train") and getattr(action.type, "__name__", "") == "path"
            for value in [v for v in HOSTILE if v.strip() == "" or "\n" in v] if legit else HOSTILE:
                # (a training command given a fine relative path such as `nan` would train: only refusals there)
                argv = ["--data", str(files.data), *_with(bases[name], action, value)]
                code, err = _run(argv, capsys)
                problem = _judge(argv, code, err)
                if problem:
                    failures.append(f"sr-pipeline {' '.join(map(repr, argv[2:]))}: {problem}; stderr: {err.strip()!r}")
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures)


@pytest.mark.parametrize("setting", sorted(ENV_SETTINGS))
def test_every_environment_setting_survives_hostile_values(setting, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in [v for v in HOSTILE if "\0" not in v]:
        monkeypatch.setenv(setting, value)
        code, err = _run(["--data", str(tmp_path / "data"), "models"], capsys)
        assert _judge([], code, err) is None, (setting, value, code, err)
    numeric = setting in NUMERIC_SETTINGS
    for value in ("", "a\nb", *(("nan", "inf", "1e26") if numeric else ())):
        monkeypatch.setenv(setting, value)
        code, err = _run(["--data", str(tmp_path / "data"), "models"], capsys)
        assert code == 2 and setting in err, (setting, value, err)
