"""The wheel and sdist build without warnings and work installed in a fresh virtual environment;
the sample pull-request workflow's steps run as written, installing the tool from its setting.

These run real `python -m build` and `pip install` (dependencies from pip's cache or the package
index) on a copy of this checkout's files, so the checkout itself is never written to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLE_REPO, git, git_init_commit, write_files

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = SAMPLE_REPO / ".github" / "workflows" / "plan.yml"
BOUND = 600  # seconds for one build or install on a loaded machine; it takes well under one


def run(args: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_")}
    # The machine's own setting, not the project's: it makes setuptools warn about bytecode.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(options.pop("env", {}))  # type: ignore[call-overload]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=BOUND, check=False, env=env, **options
    )  # type: ignore[call-overload]


def checkout_copy(destination: Path) -> Path:
    """The files git tracks or would track here (committed or not), copied to `destination`."""
    listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in listed.split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def fresh_venv(path: Path) -> Path:
    venv.create(path, with_pip=True, symlinks=True)
    return path / "bin"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkout_copy(tmp_path_factory.mktemp("checkout") / "gitops-orchestrator")


def test_wheel_and_sdist_build_without_warnings_and_the_wheel_runs(
    source: Path, tmp_path: Path
) -> None:
    built = run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)])
    assert built.returncode == 0, built.stdout + built.stderr
    warnings = [
        line
        for line in (built.stdout + built.stderr).splitlines()
        if re.search(r"warning|deprecat", line, re.IGNORECASE)
    ]
    assert warnings == []
    (wheel,) = (tmp_path / "dist").glob("gitops_orchestrator-*-py3-none-any.whl")
    assert len(list((tmp_path / "dist").glob("gitops_orchestrator-*.tar.gz"))) == 1

    bin_dir = fresh_venv(tmp_path / "venv")
    installed = run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    tool = str(bin_dir / "gitops-orchestrator")
    checked = run([tool, "validate", str(SAMPLE_REPO)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid (3 modules, 3 deployments" in checked.stdout
    helped = run([tool, "serve", "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "GITOPS_REPO" in helped.stdout
    # The pages' templates and static files are in the wheel, not only in the checkout.
    count = (
        "import importlib.resources as r; "
        "print(len(list(r.files('gitops_orchestrator.web').joinpath('templates').iterdir())))"
    )
    templates = run([str(bin_dir / "python"), "-c", count])
    assert int(templates.stdout) > 3, templates.stderr


def test_the_sample_workflow_steps_install_from_their_setting_and_run(
    source: Path, tmp_path: Path
) -> None:
    document = yaml.safe_load(WORKFLOW.read_text())
    requirement = document["env"]["GITOPS_ORCHESTRATOR_PACKAGE"]
    assert re.fullmatch(r"gitops-orchestrator @ git\+https://\S+\.git@v\d+\.\d+\.\d+", requirement)
    # The same requirement, pointing at this checkout tagged as a release.
    git_init_commit(source, "a release")
    tag = requirement.rsplit("@", 1)[1]
    git(source, "tag", tag)
    # file://localhost/...: the pip that venv bundles here rejects an empty host in a requirement.
    local = f"gitops-orchestrator @ git+file://localhost{source}@{tag}"

    fleet = git_init_commit(shutil.copytree(SAMPLE_REPO, tmp_path / "fleet"), "the fleet")
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(tmp_path / "fleet"), str(work))
    git(work, "checkout", "--quiet", "-b", "change")
    git(work, "config", "user.name", "Test User")
    git(work, "config", "user.email", "test@example.com")
    write_files(work, {"devices.yaml": (SAMPLE_REPO / "devices.yaml").read_text().replace(
        "cordoned: true", "cordoned: false")})  # fmt: skip
    git_init_commit(work, "sup3 is back")
    assert fleet

    bin_dir = fresh_venv(tmp_path / "runner")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITOPS_ORCHESTRATOR_PACKAGE": local,
        "GITOPS_INVENTORY": "",
    }
    (job,) = document["jobs"].values()
    ran = []
    for step in job["steps"]:
        if "run" not in step or "if" in step:  # actions (checkout, comment) and the final gate
            continue
        script = step["run"].replace("${{ github.base_ref }}", "main")
        assert "${{" not in script, script
        done = run(["bash", "-e", "-c", script], cwd=work, env=env)
        ran.append(step["name"])
        assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
    assert ran == ["Install gitops-orchestrator", "Validate", "Plan"]
    plan = (work / "plan.md").read_text()
    assert "sup3" in plan
