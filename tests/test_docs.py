"""Documentation that must not drift from the code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_orchestrator import settings

ROOT = Path(__file__).resolve().parent.parent
GROUPS = [
    value
    for value in vars(settings).values()
    if dataclasses.is_dataclass(value) and isinstance(value, type)
]


@pytest.mark.parametrize(
    "name", sorted(f.name for group in GROUPS for f in dataclasses.fields(group))
)
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in (ROOT / "docs" / "configuration.md").read_text()


def test_sample_binaries_are_built_from_their_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "sample-repo" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
