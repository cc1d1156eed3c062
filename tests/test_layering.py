"""The package layering of README's "What is where": the core (msldm/) and the daemon (server/)
never import the DAW-side bridge, and the modules the bridge borrows from msldm stay light.

Static (the source files' import statements, lazy ones inside functions included), so a
leak is caught even on a code path no other test runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BRIDGE_IMPORTS_ALLOWED = {
    # The wire protocol's single definition lives with the bridge (docs/protocol.md); the
    # daemon implements it.
    "server": {"plugin_bridge.protocol"},
    # `msldm demo` sends the example region with the bridge's client, exactly as a DAW does.
    "msldm/demo.py": {"plugin_bridge.client"},
}

SHARED_WITH_BRIDGE = {  # module -> what it may import besides the standard library
    "msldm/atomic.py": set(),
    "msldm/cli_common.py": set(),
    "msldm/hashing.py": set(),
    "msldm/wavio.py": {"numpy", "soundfile", "msldm.atomic", "msldm.hashing"},
}


def imported_names(path: Path) -> set[str]:
    """Every dotted name `path` imports, at top level or inside functions: `import a.b` gives
    `a.b`, `from a import b` gives `a.b` (b may be a submodule or a name in a)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, modules: set[str]) -> bool:
    """`name` is one of `modules` or something inside one of them."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def bridge_leaks(path: Path, allowed: set[str]) -> set[str]:
    """The plugin_bridge names `path` imports from outside the `allowed` modules."""
    return {n for n in imported_names(path) if n.split(".")[0] == "plugin_bridge" and not _within(n, allowed)}


def _allowed_bridge_imports(rel: str) -> set[str]:
    return BRIDGE_IMPORTS_ALLOWED.get(rel, BRIDGE_IMPORTS_ALLOWED.get(rel.split("/")[0], set()))


@pytest.mark.parametrize("package", ["msldm", "server"])
def test_core_and_daemon_do_not_import_the_bridge(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    leaks = {}
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        extra = bridge_leaks(f, _allowed_bridge_imports(rel))
        if extra:
            leaks[rel] = sorted(extra)
    assert not leaks, f"imports of the DAW-side bridge (move what is shared to a neutral msldm module): {leaks}"


def test_the_import_scan_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom plugin_bridge.protocol import ErrorCode\nimport plugin_bridge\n"
                   "def f():\n    from plugin_bridge import wavio\n    import plugin_bridge.cli\n")
    assert bridge_leaks(src, {"plugin_bridge.protocol"}) == {"plugin_bridge", "plugin_bridge.wavio", "plugin_bridge.cli"}


@pytest.mark.parametrize("rel", sorted(SHARED_WITH_BRIDGE))
def test_modules_shared_with_the_bridge_stay_light(rel: str) -> None:
    """The bridge-only install has numpy, pyzmq and soundfile: these modules may need no more."""
    allowed = SHARED_WITH_BRIDGE[rel]
    heavy = {n for n in imported_names(ROOT / rel)
             if n.split(".")[0] not in sys.stdlib_module_names and not _within(n, allowed)}
    assert not heavy, f"{rel} imports {sorted(heavy)}"
