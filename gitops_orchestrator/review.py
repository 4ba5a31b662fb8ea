"""`plan`'s shell: load two commits and an inventory, and hand them to `core.review`.

Head is compared with the merge base of base and head, which is what merging it changes; when
base has moved on since, the plan says by how many commits (they are not in head, and a plan
against base's tip would show them undone). Both commits are read from git objects (`repo`),
never the working tree, and loaded with one shared `LoadCache`, so blobs the change does not
touch are parsed and inspected once. A commit with problems has no snapshot; its modules and
deployments are still read leniently here (`lenient_facts`: YAML, wasm exports and imports,
whatever parses), so a breaking change can be shown with both versions' facts next to the
problems that reject it; a valid commit's facts come from its snapshot (`commit_facts`).
Raises `RepoError` for a path or ref that cannot be read; bad content is never an exception.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydantic

from . import documents, manifests, repo, signatures, wasm
from . import inventory as inventory_module
from .core import review as reviewing
from .core.modulediff import CommitFacts, ModuleFacts
from .core.review import Review
from .inventory import Inventory
from .models import Function, LoadedModule, LoadResult, Problem, Snapshot
from .repo import Tree
from .settings import LoaderSettings


@dataclass(frozen=True)
class Planned:
    """A review and where its inputs came from, for the report."""

    review: Review
    base_ref: str
    head_ref: str
    folder: str
    """PATH relative to the repository's root ('' at the root): problem files are shown
    relative to the root, as a pull request shows them."""
    inventory: str | None
    """The inventory's file or URL; None when devices.yaml stood in for it."""
    base_tip: str = ""
    """The commit `base_ref` names; the review's base is the merge base with head."""
    merge_base: str | None = None
    """None when base and head share no commit: then the review's base is base's tip."""
    moved_on: int = 0
    """Commits base has past the merge base: changes that head does not have."""
    warnings: tuple[str, ...] = ()
    """For people, before everything but the summary."""


def plan_change(
    path: Path,
    *,
    base: str,
    head: str,
    inventory: Inventory | None,
    now: float,
    prune_limit: float = 0.5,
    return_after: float = 30.0,
    settings: LoaderSettings | None = None,
    verifier: signatures.Verifier | None = None,
) -> Planned:
    """What merging commit `head` onto commit `base` of the repository at `path` would do."""
    settings = settings or LoaderSettings()
    repository = repo.open_repository(path)
    try:
        top = Path(repository.working_tree_dir or repository.git_dir).resolve()
        try:
            folder = path.resolve().relative_to(top).as_posix()
        except ValueError:  # the .git folder itself
            folder = "."
        folder = "" if folder == "." else folder
        cache = manifests.LoadCache()
        base_tree = repo.commit_tree(repository, base, folder)
        head_tree = repo.commit_tree(repository, head, folder)
        tip = base_tree.sha or ""
        fork, moved_on = repo.merge_base(repository, tip, head_tree.sha or "")
        if fork is not None and fork != tip:
            base_tree = repo.commit_tree(repository, fork, folder)
        base_result = manifests.load(base_tree, settings=settings, cache=cache)
        head_result = manifests.load(head_tree, settings=settings, cache=cache)
        head_result = signatures.verified(
            head_result, verifier, git_dir=Path(repository.git_dir), sha=head_tree.sha or head
        )
        base_facts = _facts(base_result, base_tree, settings)
        head_facts = _facts(head_result, head_tree, settings)
    finally:
        repository.close()
    warnings = _warnings(base, head, fork, moved_on)
    if inventory is None:
        observed, note = inventory_module.assumed(
            (base_result.snapshot, head_result.snapshot), (base_facts, head_facts)
        )
        running, notes = {}, [note]
    else:
        observed, running, notes = dict(inventory.devices), dict(inventory.running), []
    result = reviewing.review(
        base_result.snapshot, head_result.snapshot, inventory=observed, now=now,
        base_facts=base_facts, head_facts=head_facts, head_problems=head_result.problems,
        running=running, return_after=return_after, prune_limit=prune_limit, notes=notes,
        assumed=inventory is None,
    )  # fmt: skip
    # An invalid commit has no snapshot, so the review cannot know its sha.
    result = replace(result, base_sha=base_tree.sha, head_sha=head_tree.sha)
    source = inventory.source if inventory else None
    return Planned(result, base, head, folder, source, tip, fork, moved_on, warnings)


def _warnings(base: str, head: str, fork: str | None, moved_on: int) -> tuple[str, ...]:
    if fork is None:
        return (
            f"base {base} and head {head} have no common commit (unrelated histories, or a "
            "shallow clone: fetch with fetch-depth: 0): head is compared with base's tip",
        )
    if moved_on:
        commits = "1 commit" if moved_on == 1 else f"{moved_on} commits"
        return (
            f"base {base} has moved on by {commits} since the merge base {fork[:12]}: head "
            "is compared with the merge base (what merging changes), so this plan does not "
            f"show what those commits change; merge or rebase {base} into the branch to plan "
            "against them",
        )
    return ()


def _facts(result: LoadResult, tree: Tree, settings: LoaderSettings) -> CommitFacts:
    if result.snapshot is not None:
        return commit_facts(result.snapshot)
    return lenient_facts(tree, settings)


def signature(function: Function) -> str:
    """A declared function as one line: `get(integer) -> integer [in.bin: execution]`."""
    text = f"{function.method.value}({', '.join(function.params)}) -> {function.output}"
    if function.mounts:
        text += " [" + ", ".join(f"{m.path}: {m.stage.value}" for m in function.mounts) + "]"
    return text


def module_facts(module: LoadedModule) -> ModuleFacts:
    return ModuleFacts(
        name=module.name,
        wasm=module.binary.path,
        digest=module.binary.digest,
        size=module.binary.size,
        exports=dict(module.inspection.functions),
        imports=tuple(f"{item.module}.{item.name}" for item in module.inspection.imports),
        requirements=module.requirements,
        functions={name: signature(spec) for name, spec in module.spec.functions.items()},
        data={name: facts.digest for name, facts in module.data.items()},
    )


def commit_facts(snapshot: Snapshot) -> CommitFacts:
    return CommitFacts(
        modules={name: module_facts(module) for name, module in snapshot.modules.items()},
        calls={
            name: tuple((step.module, step.function) for step in deployment.sequence)
            for name, deployment in snapshot.deployments.items()
        },
    )


def lenient_facts(tree: Tree, settings: LoaderSettings) -> CommitFacts:
    """What can be read of an invalid commit's modules and deployments, problems skipped."""
    modules: dict[str, ModuleFacts] = {}
    for path in sorted(tree.entries):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "modules" and parts[2] == manifests.MODULE_FILE:
            facts = _module(tree, path, parts[1], settings)
            if facts is not None:
                modules[facts.name] = facts
    calls: dict[str, tuple[tuple[str, str], ...]] = {}
    for path in sorted(tree.listdir("deployments")):
        data = _yaml(tree, path, settings) if path.endswith(".yaml") else None
        sequence = data.get("sequence") if data else None
        if isinstance(sequence, list):
            name = posixpath.basename(path)[: -len(".yaml")]
            calls[name] = tuple(
                (str(step.get("module")), str(step.get("function")))
                for step in sequence
                if isinstance(step, dict)
            )
    return CommitFacts(modules=modules, calls=calls)


def _module(tree: Tree, path: str, name: str, settings: LoaderSettings) -> ModuleFacts | None:
    data = _yaml(tree, path, settings)
    if data is None or not isinstance(data.get("wasm"), str):
        return None
    folder = posixpath.dirname(path)
    binary = _read(tree, posixpath.normpath(posixpath.join(folder, data["wasm"])), settings)
    digest = hashlib.sha256(binary).hexdigest() if binary is not None else None
    exports: dict[str, int] = {}
    imports: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    if binary is not None:
        try:
            inspection = wasm.inspect(binary)
        except wasm.InvalidWasm:
            digest = None  # its problem is listed; nothing to compare
        else:
            exports = dict(inspection.functions)
            imports = tuple(f"{item.module}.{item.name}" for item in inspection.imports)
            requirements = tuple(
                sorted({item.name for item in inspection.imports if item.kind == "func"})
            )
    functions: dict[str, str] = {}
    for function, spec in _mapping(data.get("functions")).items():
        try:
            functions[str(function)] = signature(Function.model_validate(spec))
        except pydantic.ValidationError:
            functions[str(function)] = "(not valid)"
    files: dict[str, str] = {}
    for file, relative in _mapping(data.get("data")).items():
        content = _read(tree, posixpath.normpath(posixpath.join(folder, str(relative))), settings)
        files[str(file)] = hashlib.sha256(content).hexdigest() if content is not None else "-"
    return ModuleFacts(
        name=name, wasm=posixpath.normpath(posixpath.join(folder, data["wasm"])), digest=digest,
        size=len(binary) if binary is not None else None, exports=exports, imports=imports,
        requirements=requirements, functions=functions, data=files,
    )  # fmt: skip


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _yaml(tree: Tree, path: str, settings: LoaderSettings) -> dict[str, Any] | None:
    text = _read(tree, path, settings, limit=settings.max_manifest_size)
    if text is None:
        return None
    try:
        data = documents.parse(text, max_nodes=settings.max_yaml_nodes).data
    except documents.DocumentError:
        return None
    return data if isinstance(data, dict) else None


def _read(
    tree: Tree, path: str, settings: LoaderSettings, *, limit: int | None = None
) -> bytes | None:
    entry = tree.entries.get(path)
    if entry is None or entry.is_symlink or entry.size > (limit or settings.max_binary_size):
        return None
    return tree.read(path)


def problem_file(planned: Planned, problem: Problem) -> str:
    """A problem's file relative to the repository's root."""
    if not planned.folder or problem.file == ".":
        return planned.folder or problem.file
    return f"{planned.folder}/{problem.file}"
