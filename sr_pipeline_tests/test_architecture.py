"""The layers of docs/architecture.md, read off the tree's imports (function-level imports included).

core (sr/) <- storage/ <- jobs (intake/, training/, evaluation/, serving/) <- entry (cli, defs/, ...):
nothing imports a layer above its own, and only the entry layer talks to Dagster.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sr_pipeline"
JOBS = ("intake", "training", "evaluation", "serving")
ENTRY = ("defs", "definitions", "cli", "demo")


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(module, line) of every import in a file; relative imports resolved against the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                module = ".".join([*base, module] if module else base)
            # `from sr_pipeline.storage import store` imports the module sr_pipeline.storage.store
            found += [(f"{module}.{alias.name}" if module.count(".") < 2 else module, node.lineno)
                      for alias in node.names]
    return found


def _files(*parts: str) -> list[Path]:
    files = []
    for part in parts:
        target = PACKAGE / part
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    assert files, f"no files under {parts}"
    return files


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path.name}:{line}"


def _violations(files: list[Path], allowed: tuple[str, ...], forbidden_outside: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in files:
        for module, line in _imports(path):
            ours = module == "sr_pipeline" or module.startswith("sr_pipeline.")
            if ours and not module.startswith(allowed):
                bad.append(f"{_where(path, line)} imports {module}")
            if module.split(".")[0] in forbidden_outside:
                bad.append(f"{_where(path, line)} imports {module}")
    return bad


def test_the_core_imports_only_the_core_and_the_atomic_write_helper():
    assert _violations(_files("sr"), ("sr_pipeline.sr", "sr_pipeline.storage.atomic"),
                       ("dagster", "dagster_pipes")) == []


def test_storage_imports_only_storage_the_core_and_the_usage_error():
    allowed = ("sr_pipeline.storage", "sr_pipeline.sr", "sr_pipeline.errors")  # errors.py is a leaf: no project imports
    assert _violations(_files("storage"), allowed, ("dagster", "dagster_pipes")) == []


@pytest.mark.parametrize("job", JOBS)
def test_job_packages_never_import_the_entry_layer_or_dagster(job):
    allowed = tuple(f"sr_pipeline.{p}" for p in ("sr", "storage", "errors", "checks", *JOBS))
    bad = _violations(_files(job), allowed, ("dagster",))
    # The training command is the far side of Dagster Pipes: it may open the Pipes session.
    bad += [f"{_where(p, line)} imports {m}" for p in _files(job) for m, line in _imports(p)
            if m.startswith("dagster_pipes") and p != PACKAGE / "training" / "launch.py"]
    assert bad == []


def test_the_dagster_layer_keeps_torch_out_of_import_time():
    heavy = ("torch", "diffusers", "accelerate", "lpips")
    bad = [f"{_where(p, line)} imports {m} at import time" for p in _files("defs", "definitions")
           for m, line in _imports(p, top_level_only=True) if m.split(".")[0] in heavy]
    assert bad == []


def test_each_package_folder_says_its_one_job():
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")):
        init = folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{folder.name}/ has no docstring"


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: upward imports, in a function or as a package attribute, are reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import dagster\n\ndef f():\n    from sr_pipeline.storage.store import list_images\n"
                     "    from sr_pipeline.storage import layout\n")
    assert _violations([probe], ("sr_pipeline.sr",), ("dagster",)) == [
        "probe.py:1 imports dagster", "probe.py:4 imports sr_pipeline.storage.store",
        "probe.py:5 imports sr_pipeline.storage.layout"]
