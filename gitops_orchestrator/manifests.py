"""Turn a repository tree into a validated snapshot, or into the full list of its problems.

This is where the repository format (design §1) is enforced: YAML is parsed with line numbers
(`documents`), each file is checked against its pydantic model (`models`), wasm binaries are
inspected (`wasm`), and references between files are followed. Every problem is collected, so
a user fixes a broken commit in one round. Nothing here raises for bad content.

Work is keyed by git blob sha in `LoadCache`: loading the next commit re-parses and re-inspects
only the blobs that changed.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from . import documents, wasm
from .models import (
    INTEGER,
    NAME_RULES,
    Deployment,
    Devices,
    FileFacts,
    Inspection,
    LoadedModule,
    LoadResult,
    Module,
    Problem,
    Snapshot,
    Stage,
)
from .repo import Entry, Tree
from .settings import LoaderSettings

DEVICES_FILE = "devices.yaml"
MODULE_FILE = "module.yaml"
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class LoadCache:
    """Results for blobs already seen, keyed by git blob sha (commits only)."""

    # Problems are cached as (line, message): the same blob may sit at several paths.
    manifests: dict[tuple[str, str], tuple[Any, tuple[tuple[int | None, str], ...]]] = field(
        default_factory=dict
    )
    binaries: dict[str, tuple[str, Inspection | str]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    # A valid module is reused whole while its manifest, binary and data blobs are unchanged,
    # so later stages (the store) can recognise it by identity.
    modules: dict[tuple[str | None, ...], LoadedModule] = field(default_factory=dict)

    def keep_only(self, used: LoadCache) -> None:
        """Forget what the last load did not use, so the cache stays the size of one commit."""
        self.manifests, self.binaries = used.manifests, used.binaries
        self.digests, self.modules = used.digests, used.modules


def load(
    tree: Tree, *, settings: LoaderSettings | None = None, cache: LoadCache | None = None
) -> LoadResult:
    """Validate every file of the repository format in `tree`."""
    cache = cache if cache is not None else LoadCache()
    loader = _Loader(tree, settings or LoaderSettings(), cache)
    result = loader.run()
    cache.keep_only(loader.used)
    return result


class _Loader:
    def __init__(self, tree: Tree, settings: LoaderSettings, cache: LoadCache) -> None:
        self.tree = tree
        self.settings = settings
        self.cache = cache
        self.used = LoadCache()
        self.problems: list[Problem] = []

    def run(self) -> LoadResult:
        if not any(_is_repository_file(path) for path in self.tree.entries):
            self.problem(
                ".",
                None,
                "has no modules/, deployments/ or devices.yaml: is this the repository's root?",
            )
        devices = self._devices()
        modules = self._modules()
        deployments = self._deployments(modules)
        problems = tuple(sorted(set(self.problems), key=_problem_order))
        if problems or devices is None:
            return LoadResult(snapshot=None, problems=problems)
        snapshot = Snapshot(
            commit_sha=self.tree.sha,
            modules=dict(sorted(modules.items())),
            deployments=dict(sorted(deployments.items())),
            devices=devices,
        )
        return LoadResult(snapshot=snapshot, problems=())

    def problem(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    # devices.yaml

    def _devices(self) -> Devices | None:
        if "devices.yml" in self.tree.entries:
            self.problem("devices.yml", None, "is ignored: name the file devices.yaml")
        if DEVICES_FILE not in self.tree.entries:
            return Devices()
        devices, _ = self._manifest(DEVICES_FILE, Devices)
        return devices

    # modules/<name>/module.yaml

    def _modules(self) -> dict[str, LoadedModule]:
        folders = sorted(
            {
                path.split("/")[1]
                for path in self.tree.entries
                if path.startswith("modules/") and path.count("/") >= 2
            }
        )
        modules: dict[str, LoadedModule] = {}
        for folder in folders:
            base = f"modules/{folder}"
            path = f"{base}/{MODULE_FILE}"
            if path not in self.tree.entries:
                self.problem(base, None, f"has no {MODULE_FILE}: every module folder needs one")
                continue
            spec, doc = self._manifest(path, Module)
            if spec is None or doc is None:
                continue
            if spec.name != folder:
                self.problem(
                    path,
                    doc.line_of(("name",)),
                    f"name {spec.name!r} must match its folder {folder!r}",
                )
                continue
            key = self._module_key(spec, path)
            loaded = self.cache.modules.get(key) if key else None
            if loaded is None:
                loaded = self._module(spec, path, doc)
            elif key:
                self._keep_facts(key)
            if loaded is not None and key:
                self.used.modules[key] = loaded
            if loaded is not None:
                modules[spec.name] = loaded
        return modules

    def _keep_facts(self, key: tuple[str | None, ...]) -> None:
        # A reused module still owns its blobs' facts: the next commit may change only its
        # manifest, and must not re-read and re-inspect an unchanged binary for that.
        for blob_sha in key[len(key) // 2 + 1 :]:
            if blob_sha in self.cache.binaries:
                self.used.binaries[blob_sha] = self.cache.binaries[blob_sha]
            if blob_sha in self.cache.digests:
                self.used.digests[blob_sha] = self.cache.digests[blob_sha]

    def _module_key(self, spec: Module, path: str) -> tuple[str | None, ...] | None:
        """The blob shas a module is made of, when all are known (commits only)."""
        folder = posixpath.dirname(path)
        paths = [path, *(posixpath.normpath(posixpath.join(folder, p)) for p in spec.referenced)]
        entries = [self.tree.entries.get(p) for p in paths]
        if any(entry is None or entry.blob_sha is None for entry in entries):
            return None
        return (*paths, *(entry.blob_sha for entry in entries if entry is not None))

    def _module(self, spec: Module, path: str, doc: documents.Document) -> LoadedModule | None:
        folder = posixpath.dirname(path)
        ok = True
        binary_entry = self._referenced(
            path, doc.line_of(("wasm",)), folder, spec.wasm, "wasm file"
        )
        inspection: Inspection | None = None
        binary: FileFacts | None = None
        if binary_entry is not None:
            facts = self._inspect(binary_entry)
            if isinstance(facts[1], str):
                self.problem(binary_entry.path, None, facts[1])
            else:
                binary = FileFacts(binary_entry.path, facts[0], binary_entry.size)
                inspection = facts[1]
        if inspection is not None:
            ok &= self._check_exports(spec, path, doc, inspection, binary_entry)
        data: dict[str, FileFacts] = {}
        for name, relative in spec.data.items():
            line = doc.line_of(("data", name))
            entry = self._referenced(path, line, folder, relative, f"data file {name!r}")
            if entry is None:
                ok = False
            else:
                data[name] = FileFacts(entry.path, self._digest(entry), entry.size)
        ok &= self._check_mounts(spec, path, doc)
        if not ok or binary is None or inspection is None:
            return None
        return LoadedModule(spec=spec, binary=binary, inspection=inspection, data=data)

    def _check_exports(
        self,
        spec: Module,
        path: str,
        doc: documents.Document,
        inspection: Inspection,
        binary: Entry | None,
    ) -> bool:
        ok = True
        wasm_name = posixpath.basename(binary.path) if binary else spec.wasm
        for name, function in spec.functions.items():
            line = doc.line_of(("functions", name))
            exported = inspection.functions.get(name)
            if exported is None:
                names = ", ".join(inspection.functions) or "none"
                self.problem(
                    path,
                    line,
                    f"function {name!r} is not exported by {wasm_name} (exports: {names})",
                )
                ok = False
            elif exported != len(function.params):
                self.problem(
                    path,
                    doc.line_of(("functions", name, "params")),
                    f"function {name!r} takes {_count(exported, 'parameter')} in {wasm_name}, "
                    f"but params lists {len(function.params)}",
                )
                ok = False
        return ok

    def _check_mounts(self, spec: Module, path: str, doc: documents.Document) -> bool:
        ok = True
        mounted: set[str] = set()
        for name, function in spec.functions.items():
            for index, mount in enumerate(function.mounts):
                if mount.stage is not Stage.DEPLOYMENT:
                    continue
                mounted.add(mount.path)
                if mount.path not in spec.data:
                    self.problem(
                        path,
                        doc.line_of(("functions", name, "mounts", index)),
                        f"function {name!r} mounts {mount.path!r} at deployment, "
                        f"but 'data' has no file named {mount.path!r}",
                    )
                    ok = False
        for name in spec.data:
            if name not in mounted:
                self.problem(
                    path,
                    doc.line_of(("data", name)),
                    f"data file {name!r} is not mounted by any function "
                    "(add a mount with stage 'deployment')",
                )
                ok = False
        return ok

    # deployments/<name>.yaml

    def _deployments(self, modules: dict[str, LoadedModule]) -> dict[str, Deployment]:
        deployments: dict[str, Deployment] = {}
        for path in sorted(self.tree.listdir("deployments")):
            if path.endswith(".yml"):
                self.problem(path, None, "is ignored: deployment files end in .yaml")
                continue
            if not path.endswith(".yaml"):
                continue
            deployment, doc = self._manifest(path, Deployment)
            if deployment is None or doc is None:
                continue
            stem = posixpath.basename(path)[: -len(".yaml")]
            if deployment.name != stem:
                self.problem(
                    path,
                    doc.line_of(("name",)),
                    f"name {deployment.name!r} must match the file name {stem!r}",
                )
                continue
            if self._check_steps(deployment, path, doc, modules):
                deployments[deployment.name] = deployment
        return deployments

    def _check_steps(
        self,
        deployment: Deployment,
        path: str,
        doc: documents.Document,
        modules: dict[str, LoadedModule],
    ) -> bool:
        ok = True
        seen: set[tuple[str, str]] = set()
        for index, step in enumerate(deployment.sequence):
            line = doc.line_of(("sequence", index))
            module = modules.get(step.module)
            if module is None:
                if not any(p.startswith(f"modules/{step.module}/") for p in self.tree.entries):
                    self.problem(
                        path, line, f"step {index + 1}: there is no module {step.module!r}"
                    )
                    ok = False
                else:  # the module exists but has problems of its own, reported there
                    ok = False
                continue
            function = module.spec.functions.get(step.function)
            if function is None:
                known = ", ".join(module.spec.functions)
                self.problem(
                    path,
                    doc.line_of(("sequence", index, "function")),
                    f"step {index + 1}: module {step.module!r} has no function "
                    f"{step.function!r} (it has: {known})",
                )
                ok = False
                continue
            if (step.module, step.function) in seen:
                self.problem(
                    path,
                    line,
                    f"step {index + 1}: {step.module}.{step.function} is already an earlier step; "
                    "a deployment can call each module function once",
                )
                ok = False
            seen.add((step.module, step.function))
            if index > 0:
                ok &= self._check_link(deployment, index, path, line, modules)
        return ok

    def _check_link(
        self,
        deployment: Deployment,
        index: int,
        path: str,
        line: int | None,
        modules: dict[str, LoadedModule],
    ) -> bool:
        """The previous step's result must be something this step can take (protocol §4)."""
        before, step = deployment.sequence[index - 1], deployment.sequence[index]
        previous_module = modules.get(before.module)
        previous = previous_module.spec.functions.get(before.function) if previous_module else None
        if previous is None:
            return True  # the previous step's own problem is already reported
        function = modules[step.module].spec.functions[step.function]
        if previous.output == INTEGER and not function.params:
            self.problem(
                path,
                line,
                f"step {index + 1}: {step.module}.{step.function} takes no parameters, but "
                f"receives the integer result of {before.module}.{before.function}",
            )
            return False
        if previous.is_file_output:
            outputs = {m.path for m in previous.mounts if m.stage is Stage.OUTPUT}
            inputs = {m.path for m in function.mounts if m.stage is Stage.EXECUTION}
            missing = sorted(outputs - inputs)
            if missing:
                self.problem(
                    path,
                    line,
                    f"step {index + 1}: {step.module}.{step.function} has no execution mount "
                    f"{missing[0]!r} to receive the file that {before.module}.{before.function} "
                    "writes",
                )
                return False
        return True

    # reading files

    def _manifest(
        self, path: str, model: type[ModelT]
    ) -> tuple[ModelT | None, documents.Document | None]:
        entry = self.tree.entries[path]
        key = (entry.blob_sha, model.__name__) if entry.blob_sha else None
        if key is not None and key in self.cache.manifests:
            result, problems = self.cache.manifests[key]
        else:
            result, problems = self._parse_manifest(entry, model)
        if key is not None:
            self.used.manifests[key] = (result, problems)
        self.problems.extend(Problem(path, line, message) for line, message in problems)
        if result is None:
            return None, None
        spec, doc = result
        return spec, doc

    def _parse_manifest(
        self, entry: Entry, model: type[pydantic.BaseModel]
    ) -> tuple[tuple[Any, documents.Document] | None, tuple[tuple[int | None, str], ...]]:
        if entry.is_symlink:
            return None, ((None, "is a symbolic link; commit the file itself"),)
        if entry.size > self.settings.max_manifest_size:
            limit = _size(self.settings.max_manifest_size)
            return None, ((None, f"is {_size(entry.size)}, over the {limit} limit"),)
        try:
            doc = documents.parse(
                self.tree.read(entry.path), max_nodes=self.settings.max_yaml_nodes
            )
        except documents.DocumentError as exc:
            return None, ((exc.line, exc.message),)
        if not isinstance(doc.data, dict):
            kind = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
            return None, ((doc.line_of(()), f"must be a mapping of keys, not {kind}"),)
        try:
            spec = model.model_validate(doc.data)
        except pydantic.ValidationError as exc:
            return None, tuple(_validation_problems(doc, exc))
        return (spec, doc), ()

    def _referenced(
        self, manifest: str, line: int | None, folder: str, relative: str, what: str
    ) -> Entry | None:
        """The file a manifest names, if it exists and may be sent to devices."""
        path = posixpath.normpath(posixpath.join(folder, relative))
        if path.startswith("../") or path == "..":
            self.problem(manifest, line, f"{what}: {relative} is outside the repository")
            return None
        entry = self.tree.entries.get(path)
        if entry is None:
            self.problem(manifest, line, f"{what}: {path} does not exist")
            return None
        if entry.is_symlink:
            self.problem(manifest, line, f"{what}: {path} is a symbolic link")
            return None
        if entry.size > self.settings.max_binary_size:
            limit = _size(self.settings.max_binary_size)
            self.problem(
                manifest,
                line,
                f"{what} {relative!r} is {_size(entry.size)}, over the {limit} limit",
            )
            return None
        return entry

    def _inspect(self, entry: Entry) -> tuple[str, Inspection | str]:
        facts = self.cache.binaries.get(entry.blob_sha) if entry.blob_sha else None
        if facts is None:
            binary = self.tree.read(entry.path)
            digest = hashlib.sha256(binary).hexdigest()
            try:
                facts = (digest, wasm.inspect(binary))
            except wasm.InvalidWasm as exc:
                facts = (digest, f"is not valid WebAssembly: {exc}")
        if entry.blob_sha:
            self.used.binaries[entry.blob_sha] = facts
        return facts

    def _digest(self, entry: Entry) -> str:
        digest = self.cache.digests.get(entry.blob_sha) if entry.blob_sha else None
        if digest is None:
            digest = hashlib.sha256(self.tree.read(entry.path)).hexdigest()
        if entry.blob_sha:
            self.used.digests[entry.blob_sha] = digest
        return digest


def _validation_problems(
    doc: documents.Document, exc: pydantic.ValidationError
) -> Iterable[tuple[int | None, str]]:
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        where = _where(loc)
        message = _message(error, is_key="[key]" in error["loc"])
        yield doc.line_of(loc), f"{where}: {message}" if where else message


def _where(loc: tuple[str | int, ...]) -> str:
    """A location as users read it: `step 2.function`, `functions.render.mounts[0]`."""
    text = ""
    if len(loc) >= 2 and loc[0] == "sequence" and isinstance(loc[1], int):
        text, loc = f"step {loc[1] + 1}", loc[2:]
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif SIMPLE_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _message(error: Any, *, is_key: bool) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind == "too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        rule = NAME_RULES.get(error["ctx"]["pattern"], str(error["msg"]))
        return f"{value!r} is not allowed: {rule}"
    text = str(error["msg"]).removeprefix("Value error, ")
    if is_key and not isinstance(value, str):
        return f"{value!r} is not allowed as a name: names are text (quote it: '{value}')"
    if is_key:
        return f"{value!r} is not allowed as a name: {text}"
    return text


def _is_repository_file(path: str) -> bool:
    return path.startswith(("modules/", "deployments/")) or path == DEVICES_FILE


def _problem_order(problem: Problem) -> tuple[str, int, str]:
    return (problem.file, problem.line or 0, problem.message)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size} bytes"
