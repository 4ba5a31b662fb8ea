"""Documentation that must not drift from the code."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gitops_orchestrator import settings
from gitops_orchestrator.cli import main, serve

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


CONFIGURATION = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<name>\w+)` \|(?P<flag>[^|]*)\|(?P<variable>[^|]*)\|", re.MULTILINE)
SOURCES = "".join(
    (ROOT / "gitops_orchestrator" / name).read_text() for name in ("cli.py", "remote.py")
) + "".join(f"{v}\n" for group in settings.VARIABLES.values() for v in group.values())


def documented() -> dict[str, tuple[str, str]]:
    return {
        m["name"]: (m["flag"].strip(), m["variable"].strip())
        for m in ROW.finditer(CONFIGURATION.read_text())
    }


def help_of(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    "name", sorted(f.name for group in GROUPS for f in dataclasses.fields(group))
)
def test_every_setting_has_a_row_with_a_flag_or_a_variable_that_exist(name: str) -> None:
    rows = documented()
    assert name in rows, f"docs/configuration.md has no row for `{name}`"
    flag, variable = rows[name]
    assert flag or variable, f"`{name}` has neither a flag nor a variable"
    helps = help_of("serve") + help_of("demo") + help_of("validate")
    for each in re.findall(r"--[a-z-]+", flag):
        assert f"{each} " in helps, f"{each} is documented for `{name}` but no command has it"
    for each in re.findall(r"GITOPS_[A-Z_]+", variable):
        assert each.removesuffix("_FILE") in SOURCES, (
            f"{each} is documented for `{name}` but nothing reads it"
        )


def test_serve_help_shows_each_flags_variable_and_default() -> None:
    context = click.Context(serve, info_name="serve", show_default=True)
    for param in serve.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        record = param.get_help_record(context)
        assert record is not None
        text = record[1]
        if param.envvar:
            assert f"env var: {param.envvar}" in text, (param.name, text)
        # Options without a default say so in their help, as --branch does; others show it.
        shown = param.to_info_dict()["default"]
        if shown not in (None, ()) and not param.is_flag and not param.required:
            assert "default:" in text, (param.name, text)
    # Settings without a flag are named too.
    for group in settings.VARIABLES.values():
        for variable in group.values():
            assert variable in help_of("serve")


def test_a_bad_variable_stops_serve_with_its_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--repo", str(tmp_path), "--data-dir", str(tmp_path / "d")],
        env={"GITOPS_HEALTH_TIMEOUT": "soon", "GITOPS_MDNS_INTERFACES": "none"},
    )
    assert result.exit_code == 2
    assert "GITOPS_HEALTH_TIMEOUT='soon' is not a number" in result.output


def test_variables_of_settings_without_a_flag_are_read() -> None:
    environ = {"GITOPS_HEALTH_TIMEOUT": "1.5", "GITOPS_LOG_RING": "7", "GITOPS_TRY_IT": "off"}
    devices = settings.with_variables(settings.DeviceSettings(), environ)
    assert (devices.health_timeout, devices.log_ring) == (1.5, 7)
    assert settings.with_variables(settings.WebSettings(), environ).try_it is False
    with pytest.raises(ValueError, match="GITOPS_LOG_RING='0' must be above 0"):
        settings.with_variables(settings.DeviceSettings(), {"GITOPS_LOG_RING": "0"})


README = ROOT / "README.md"


def test_the_readme_links_every_doc_and_shows_the_commands() -> None:
    text = README.read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in text, f"README does not link docs/{doc.name}"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"
    for shown in ("gitops-orchestrator plan", "gitops-orchestrator status", "docker",
                  "gitops-orchestrator import-init"):  # fmt: skip
        assert shown in text, shown


def test_operations_covers_upgrades_backups_and_completion() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for heading in ("## Upgrades", "## Backups", "## Shell completion"):
        assert heading in text, heading
    assert "_GITOPS_ORCHESTRATOR_COMPLETE=bash_source" in text
