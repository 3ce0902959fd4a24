"""The message contracts ship inside the built package: a wheel holds every file of `schemas/`,
and the services load them from where the wheel was installed, not from a source checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "services", "qbo_emulator", "schemas")


def test_a_built_wheel_holds_the_schemas_and_loads_them_where_it_is_installed(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the repository
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    subprocess.run(  # noqa: S603 - pip, on a copy of this repository
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("qbo_sync-*.whl")
    contracts = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "schemas").rglob("*.json"))
    with zipfile.ZipFile(wheel) as archive:
        assert set(contracts) <= set(archive.namelist())
        archive.extractall(tmp_path / "installed")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "from services.common.schemas import SCHEMAS_DIR, default_schemas\n"
        "print(SCHEMAS_DIR)\n"
        "print(' '.join(default_schemas().names()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    folder, names = out.stdout.splitlines()
    assert Path(folder) == tmp_path / "installed" / "schemas"
    assert names.split() == [
        "common.v1",
        "invoice-updated.v1",
        "map-customer.v1",
        "refresh-invoices.v1",
        "sync-changes.v1",
    ]
