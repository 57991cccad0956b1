"""The two planes stay apart: an import contract over the source tree (ARCHITECTURE.md, STYLE.md §5).

`mainevent.media` never imports `mainevent.control` and the control plane never imports the
media plane; `mainevent.common` (shared value types and sans-IO cores) imports neither. The
check reads every module's import statements, relative ones included, so a lazy import inside
a function breaks it as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mainevent

ROOT = Path(mainevent.__file__).parent

# package → packages it must never import
FORBIDDEN = {
    "mainevent.media": ("mainevent.control",),
    "mainevent.control": ("mainevent.media",),
    "mainevent.common": ("mainevent.control", "mainevent.media"),
}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module `path` imports, relative imports resolved, with its line number."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from mainevent import control` names the package in the alias
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _violations(package: str, root: Path = ROOT) -> list[str]:
    folder = root / package.removeprefix("mainevent.").replace(".", "/")
    bad: list[str] = []
    for path in sorted(folder.rglob("*.py")):
        for line, target in imported_modules(path, root):
            for forbidden in FORBIDDEN[package]:
                if target == forbidden or target.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(root.parent)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_planes_do_not_import_each_other(package: str) -> None:
    """No module of a plane imports the other plane (nor does shared code import either)."""
    assert _violations(package) == []


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The contract check catches relative, aliased and function-local imports of the other plane."""
    root = tmp_path / "mainevent"
    (root / "media" / "edge").mkdir(parents=True)
    (root / "common").mkdir()
    (root / "media" / "edge" / "probe.py").write_text(
        "import json\nfrom . import cache\ndef f() -> None:\n    from ...control import playback\n"
    )
    (root / "common" / "probe.py").write_text(
        "from mainevent import media\nimport mainevent.control.app\n"
    )
    assert _violations("mainevent.media", root) == [
        "mainevent/media/edge/probe.py:4 imports mainevent.control",
        "mainevent/media/edge/probe.py:4 imports mainevent.control.playback",
    ]
    assert _violations("mainevent.common", root) == [
        "mainevent/common/probe.py:1 imports mainevent.media",
        "mainevent/common/probe.py:2 imports mainevent.control.app",
    ]
