"""What code a stage really runs: the static import closure of its entry module, read with :mod:`ast`.

DVC reruns a stage when one of its dependencies changes. Listing whole folders (``models/``, ``pipelines/``) reruns
every experiment when one architecture changes; listing files by hand misses imports. Instead the ``resolve`` stage
(:mod:`pipelines.stages.resolve`) writes, for every stage, the md5 of each project file it imports, found by parsing the
sources (nothing is imported, so no torch): every ``import`` statement anywhere in a file, function bodies included,
that names a module of the project's own packages, and the ``__init__.py`` of each package on the way.

Imports by name at run time (:func:`pipelines.tasks.get_task`, the architecture registry's families) are not
followed: the caller adds the task's and the architecture's modules as roots of their own.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

from pipelines import REPO_ROOT

#: The project's own top-level packages; imports of anything else (torch, the standard library) are not followed.
PACKAGES = ("pipelines", "models")


def module_file(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The source file of dotted ``module`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or ``None``."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports(path: Path, root: Path) -> tuple[str, ...]:
    """Dotted names of the project modules ``path`` imports (each ``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return tuple(sorted(n for n in names if n.split(".")[0] in PACKAGES))


def import_closure(modules: list[str] | tuple[str, ...], root: Path = REPO_ROOT) -> list[Path]:
    """Every project source file that importing ``modules`` (dotted names) can execute, sorted.

    Raises:
        ModuleNotFoundError: a root module has no source file under ``root``.
    """
    seen: set[Path] = set()
    todo: list[str] = []
    for module in modules:
        if module_file(module, root) is None:
            raise ModuleNotFoundError(f"no source file for module {module!r} under {root}", name=module)
        todo.append(module)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way are executed first
            path = module_file(".".join(parts[:i]), root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(_imports(path, root))
    return sorted(seen)


def file_hashes(paths: list[Path], root: Path = REPO_ROOT) -> dict[str, str]:
    """``{repo-relative path: md5 of its bytes}``, in path order."""
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in paths}
