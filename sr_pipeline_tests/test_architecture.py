"""The layers of docs/architecture.md, read off the tree's imports (function-level imports included).

common/ <- core (sr/) <- storage/ <- jobs (intake/ <- serving/ <- evaluation/ <- training/) <- entry (cli, defs/, ...):
nothing imports a layer above its own, and only the entry layer talks to Dagster. Inside the core the
rooms are ordered too: images <- models <- data <- judge <- train, serve (train and serve are siblings).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sr_pipeline"
# The job packages in their order: each may import the ones before it (serving restores, evaluation
# judges what serving restores, training reads the gate's split of the calibration pairs).
JOBS = ("intake", "serving", "evaluation", "training")
ENTRY = ("defs", "definitions", "cli", "demo", "api")
# Each room of the core and the rooms it may import besides itself (sr/__init__.py).
ROOMS = {
    "images": (),
    "models": ("images",),
    "data": ("images", "models"),
    "judge": ("images", "models", "data"),
    "train": ("images", "models", "data", "judge"),
    "serve": ("images", "models", "data", "judge"),
}


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
            found += [(f"{module}.{alias.name}" if _is_module(f"{module}.{alias.name}") else module, node.lineno)
                      for alias in node.names]
    return found


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of the project (not a name inside a module)."""
    if not dotted.startswith("sr_pipeline."):
        return False
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


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


def test_common_imports_nothing_of_the_project():
    assert _violations(_files("common"), ("sr_pipeline.common",), ("dagster", "dagster_pipes", "torch")) == []


def test_the_core_imports_only_the_core_and_common():
    assert _violations(_files("sr"), ("sr_pipeline.sr", "sr_pipeline.common"), ("dagster", "dagster_pipes")) == []


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_of_the_core_imports_only_the_rooms_before_it(room):
    allowed = tuple(f"sr_pipeline.sr.{r}" for r in (room, *ROOMS[room])) + ("sr_pipeline.common",)
    assert _violations(_files(f"sr/{room}"), allowed) == []


def test_the_core_is_its_rooms_and_no_more():
    """At most ten entries at the core's top level: its rooms and the package docstring."""
    entries = sorted(p.name for p in (PACKAGE / "sr").iterdir() if p.name != "__pycache__")
    assert entries == sorted(["__init__.py", *ROOMS]), entries


def test_no_module_of_the_core_renders_a_page():
    pages = ("sr_pipeline.evaluation.report_page", "sr_pipeline.evaluation.consistency_page")
    assert [m for p in _files("sr") for m, _ in _imports(p) if m.startswith(pages)] == []


def test_storage_imports_only_storage_the_core_and_common():
    allowed = ("sr_pipeline.storage", "sr_pipeline.sr", "sr_pipeline.common")
    assert _violations(_files("storage"), allowed, ("dagster", "dagster_pipes")) == []


def test_the_package_import_graph_has_no_circle():
    """Between the package's modules (function-level imports included), no import circle of any length."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {dep for dep, _ in _imports(p) if dep in modules and dep != m} for m, p in modules.items()}
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each import circle (a strongly connected component of more than one module)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("job", JOBS)
def test_job_packages_import_only_the_jobs_before_them_and_never_the_entry_layer_or_dagster(job):
    before = JOBS[: JOBS.index(job) + 1]
    allowed = tuple(f"sr_pipeline.{p}" for p in ("sr", "storage", "common", *before))
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


def test_the_circle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: upward imports, in a function or as a package attribute, are reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import dagster\n\ndef f():\n    from sr_pipeline.storage.store import list_images\n"
                     "    from sr_pipeline.storage import layout\n")
    assert _violations([probe], ("sr_pipeline.sr",), ("dagster",)) == [
        "probe.py:1 imports dagster", "probe.py:4 imports sr_pipeline.storage.store",
        "probe.py:5 imports sr_pipeline.storage.layout"]
