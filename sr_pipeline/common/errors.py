"""The command line's user-facing error: a :class:`UsageError` is bad input, told in one sentence.

Handlers raise it (or return 2 after printing one line); ``cli.main`` prints ``error: <sentence>``
and exits with code 2. Anything else that escapes a handler is a bug and keeps its traceback. The
small checks every command shares (an output folder, an input file) live here; the model-folder
check is :func:`sr_pipeline.sr.models.checkpoints.check_model_folder` so their sentences
read the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USAGE = 2


class UsageError(ValueError):
    """A command line that cannot run; its message is one sentence naming the bad value and the fix."""


def one_sentence(exc: BaseException) -> str:
    """``exc``'s message on one line: a multi-line YAML or validation report (as the profile and
    camera-registry loaders embed them) is cut to its first problem and where it is."""
    text = str(exc).strip()
    if "\n" not in text:
        return text
    cause = exc.__cause__ or exc.__context__
    detail = None
    if cause is not None and getattr(cause, "problem", None):  # yaml.MarkedYAMLError
        mark = getattr(cause, "problem_mark", None)
        detail = cause.problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    elif cause is not None and callable(getattr(cause, "errors", None)):  # pydantic.ValidationError
        errors = cause.errors()
        if errors:
            where = ".".join(map(str, errors[0].get("loc", ()))) or "the file"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            detail = f"{where}: {errors[0].get('msg', '')}{more}"
    if detail is None:
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    head = text.split(str(cause).strip())[0] if str(cause).strip() in text else text.splitlines()[0]
    return f"{head.strip().rstrip(':')}: {detail}"


def check_output_folder(option: str, path: Path, what: str = "the outputs") -> None:
    """``path`` can become a folder: it is not a file and no folder above it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} names a file; it must be a folder (for {what})")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"{option} {path} is inside {blocker}, which is a file; {option} must be a folder")


def check_input_file(option: str, path: Path, what: str = "file") -> None:
    """``path`` is an existing file (not a folder)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {path} does not exist; pass an existing {what}")
    if not path.is_file():
        raise UsageError(f"{option} {path} is a folder; pass a {what}")
