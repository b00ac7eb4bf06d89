"""The wheel contains every package: a folder with an ``__init__.py`` that
pyproject does not list would be missing from a deployed image."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"functions": "safesync.functions", "shared": "safesync.shared"}


def on_disk() -> set[str]:
    names = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            names.add(".".join([package, *rel.parts]))
    return names


def test_pyproject_lists_every_package() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == on_disk()


def test_wheel_has_every_module(tmp_path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("safesync-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in MAPPING.items():
        for source in (ROOT / folder).rglob("*.py"):
            rel = source.relative_to(ROOT / folder)
            assert "/".join([*package.split("."), *rel.parts]) in names, source
    assert not any(n.startswith(("shared/", "functions/")) for n in names)


def test_every_registered_module_ships_and_answers() -> None:
    """The registry names only modules the wheel carries, each with what the
    registry says it has: a CLI registration, an HTTP handler."""
    import importlib

    from safesync.functions import registry

    for entry in registry.ENTRIES:
        module = importlib.import_module(f"safesync.functions.{entry.module}")
        path = Path(module.__file__).relative_to(ROOT / "functions")
        assert path.parts[-1] in ("__init__.py", f"{entry.module}.py"), entry
        if entry.cli:
            assert callable(getattr(module, "register_cli", None)), entry
        if entry.target:
            assert callable(getattr(module, entry.handler, None)), entry
    assert len(set(registry.TARGETS)) == len([e for e in registry.ENTRIES if e.target])
    assert len(registry.COMMANDS) == len([e for e in registry.ENTRIES if e.cli])
