"""The loader (`manifests.load`) on the sample repository and on broken copies of it."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SAMPLE_REPO, copy_sample, git, git_init_commit, wat, write_files

from gitops_orchestrator import manifests, repo
from gitops_orchestrator.models import Admission, LoadResult, Problem
from gitops_orchestrator.settings import LoaderSettings

Edit = Callable[[Path], None]


def load_folder(path: Path, settings: LoaderSettings | None = None) -> LoadResult:
    return manifests.load(repo.FolderTree(path), settings=settings)


def load_ref(path: Path, ref: str = "HEAD", cache: manifests.LoadCache | None = None) -> LoadResult:
    with repo.tree_at(path, ref) as tree:
        return manifests.load(tree, cache=cache)


# ---------------------------------------------------------------------------------------------
# The sample repository


@pytest.fixture(scope="module")
def sample_result() -> LoadResult:
    return load_folder(SAMPLE_REPO)


def test_sample_repo_is_valid(sample_result: LoadResult) -> None:
    assert sample_result.problems == ()
    assert sample_result.snapshot is not None
    assert sample_result.snapshot.commit_sha is None  # a folder, not a commit


def test_sample_exports_and_requirements(sample_result: LoadResult) -> None:
    snapshot = sample_result.snapshot
    assert snapshot is not None
    assert list(snapshot.modules) == ["banner", "double", "fibo"]
    exports = {name: dict(m.inspection.functions) for name, m in snapshot.modules.items()}
    assert exports == {
        "fibo": {"fibo": 1},
        "double": {"double": 1},
        "banner": {"count": 0, "render": 1},
    }
    requirements = {name: m.requirements for name, m in snapshot.modules.items()}
    assert requirements == {
        "banner": ("fd_close", "fd_read", "fd_write", "path_open"),
        "double": (),
        "fibo": (),
    }
    banner_imports = {
        (i.module, i.name, i.kind) for i in snapshot.modules["banner"].inspection.imports
    }
    assert banner_imports == {
        ("wasi_snapshot_preview1", name, "func")
        for name in ("path_open", "fd_read", "fd_write", "fd_close")
    }


@pytest.mark.parametrize("name", ["fibo", "double", "banner"])
def test_sample_binary_facts(sample_result: LoadResult, sample_repo: Path, name: str) -> None:
    assert sample_result.snapshot is not None
    module = sample_result.snapshot.modules[name]
    committed = (sample_repo / "modules" / name / f"{name}.wasm").read_bytes()
    assert module.binary.path == f"modules/{name}/{name}.wasm"
    assert module.binary.digest == hashlib.sha256(committed).hexdigest()
    assert module.binary.size == len(committed)
    assert module.spec.name == name


def test_sample_binary_sizes(sample_result: LoadResult) -> None:
    assert sample_result.snapshot is not None
    sizes = {name: m.binary.size for name, m in sample_result.snapshot.modules.items()}
    assert sizes == {"banner": 1127, "double": 69, "fibo": 134}


def test_sample_data_files(sample_result: LoadResult, sample_repo: Path) -> None:
    assert sample_result.snapshot is not None
    modules = sample_result.snapshot.modules
    greeting = (sample_repo / "modules/banner/greeting.txt").read_bytes()
    assert greeting == b"Hello from the Wasm-IoT fleet!\n"
    facts = modules["banner"].data["greeting.txt"]
    assert facts.path == "modules/banner/greeting.txt"
    assert facts.digest == hashlib.sha256(greeting).hexdigest()
    assert facts.size == 31
    assert list(modules["banner"].data) == ["greeting.txt"]
    assert dict(modules["fibo"].data) == {}
    assert dict(modules["double"].data) == {}


def test_sample_deployments(sample_result: LoadResult) -> None:
    snapshot = sample_result.snapshot
    assert snapshot is not None
    steps = {
        name: [(s.module, s.function, s.device, s.selector, s.failovers) for s in d.sequence]
        for name, d in snapshot.deployments.items()
    }
    assert steps == {
        "banner": [("banner", "render", None, None, [])],
        "double": [("double", "double", None, {"room": "kitchen"}, [])],
        "fibo-chain": [
            ("fibo", "fibo", "sup1", None, ["sup2"]),
            ("double", "double", None, None, []),
        ],
    }


def test_sample_devices(sample_result: LoadResult) -> None:
    snapshot = sample_result.snapshot
    assert snapshot is not None
    devices = snapshot.devices
    assert devices.admission is Admission.LISTED
    listed = {
        name: (dict(entry.labels), entry.cordoned, entry.address)
        for name, entry in devices.devices.items()
    }
    assert listed == {
        "sup1": ({"room": "kitchen"}, False, None),
        "sup2": ({"room": "hallway"}, False, None),
        "sup3": ({"room": "garage"}, True, None),
    }


def test_sample_functions(sample_result: LoadResult) -> None:
    snapshot = sample_result.snapshot
    assert snapshot is not None
    banner = snapshot.modules["banner"].spec.functions
    assert banner["render"].output == "application/octet-stream"
    assert banner["render"].is_file_output
    assert [(m.path, m.stage.value) for m in banner["render"].mounts] == [
        ("greeting.txt", "deployment"),
        ("out.bin", "output"),
    ]
    assert banner["count"].method.value == "post"
    assert banner["count"].params == []
    assert snapshot.modules["fibo"].spec.functions["fibo"].params == ["integer"]


# ---------------------------------------------------------------------------------------------
# Broken repositories: one problem each


def replace(relative: str, old: str, new: str) -> Edit:
    """Replace the one occurrence of `old` in a file of the copy."""

    def edit(root: Path) -> None:
        path = root / relative
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} is not once in {relative}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return edit


def append(relative: str, text: str | bytes) -> Edit:
    def edit(root: Path) -> None:
        path = root / relative
        data = text if isinstance(text, bytes) else text.encode()
        path.write_bytes(path.read_bytes() + data)

    return edit


def put(files: dict[str, str | bytes]) -> Edit:
    def edit(root: Path) -> None:
        write_files(root, files)

    return edit


def remove(relative: str) -> Edit:
    return lambda root: (root / relative).unlink()


def symlink_module_yaml(root: Path) -> None:
    link = root / "modules/double/module.yaml"
    (root / "modules/double/real.yaml").write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to("real.yaml")


DOUBLE = "modules/double/module.yaml"
BANNER = "modules/banner/module.yaml"
DEPLOYMENT = "deployments/double.yaml"
DEVICES = "devices.yaml"
# A "billion laughs": 9**9 values from a file of a few hundred bytes.
BOMB = (
    "name: double\n"
    "sequence:\n"
    "  - module: double\n"
    "    function: double\n"
    "lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
)


@dataclass(frozen=True)
class Broken:
    edit: Edit
    file: str
    line: int | None
    fragment: str


BROKEN = {
    # YAML itself
    "malformed-yaml": Broken(
        put({DOUBLE: "name: double\nwasm: double.wasm\n  functions: {}\n"}),
        DOUBLE,
        3,
        "is not valid YAML: mapping values are not allowed here",
    ),
    "duplicate-key": Broken(
        append(DOUBLE, "wasm: other.wasm\n"), DOUBLE, 8, "repeats the key 'wasm'"
    ),
    "list-not-mapping": Broken(
        put({DEVICES: "- sup1\n- sup2\n"}), DEVICES, 1, "must be a mapping of keys, not a list"
    ),
    "empty-file": Broken(
        put({DEPLOYMENT: ""}), DEPLOYMENT, None, "must be a mapping of keys, not empty"
    ),
    "alias-bomb": Broken(
        put({DEPLOYMENT: BOMB}),
        DEPLOYMENT,
        5,
        "expands to too many values (aliases repeated too often?)",
    ),
    "invalid-utf8": Broken(append(DEPLOYMENT, b"# caf\xe9\n"), DEPLOYMENT, 7, "is not valid UTF-8"),
    # one file against its model
    "params-not-a-list": Broken(
        replace(DOUBLE, "params: [integer]", "params: integer"),
        DOUBLE,
        6,
        "functions.double.params: Input should be a valid list",
    ),
    "method-not-a-string": Broken(
        replace(DOUBLE, "method: get", "method: 5"),
        DOUBLE,
        5,
        "functions.double.method: Input should be 'get' or 'post'",
    ),
    "unknown-key": Broken(
        replace(DOUBLE, "    output: integer\n", "    output: integer\n    timeout: 5\n"),
        DOUBLE,
        8,
        "functions.double.timeout: unknown key",
    ),
    "name-not-url-safe": Broken(
        replace(DOUBLE, "name: double", "name: Double Module"),
        DOUBLE,
        1,
        "name: 'Double Module' is not allowed: use lower-case letters, digits, '-' and '_'",
    ),
    "output-text-plain": Broken(
        replace(DOUBLE, "output: integer", "output: text/plain"),
        DOUBLE,
        7,
        "functions.double.output: Input should be 'integer', 'application/octet-stream'",
    ),
    "file-output-without-output-mount": Broken(
        replace(DOUBLE, "output: integer", "output: image/png"),
        DOUBLE,
        4,
        "functions.double: output 'image/png' is a file, so the function needs a mount with "
        "stage 'output'",
    ),
    "output-mount-with-integer-output": Broken(
        append(DOUBLE, "    mounts:\n      - {path: out.bin, stage: output}\n"),
        DOUBLE,
        4,
        "functions.double: output mount 'out.bin' is never returned: the output is 'integer'",
    ),
    "data-named-wasm": Broken(
        append(BANNER, "  wasm: greeting.txt\n"),
        BANNER,
        17,
        "data: a data file may not be named 'wasm'",
    ),
    "data-named-description": Broken(
        append(BANNER, "  description: greeting.txt\n"),
        BANNER,
        17,
        "data: a data file may not be named 'description'",
    ),
    "step-with-device-and-selector": Broken(
        append(DEPLOYMENT, "    device: sup1\n"),
        DEPLOYMENT,
        4,
        "step 1: give either 'device' or 'selector', not both",
    ),
    "empty-sequence": Broken(
        put({DEPLOYMENT: "name: double\nsequence: []\n"}),
        DEPLOYMENT,
        2,
        "sequence: must not be empty",
    ),
    "function-name-starts-with-digit": Broken(
        replace(DOUBLE, "  double:\n", "  9double:\n"),
        DOUBLE,
        4,
        "functions.9double: '9double' is not allowed: use letters, digits, '-' and '_', "
        "not starting with a digit",
    ),
    "output-missing": Broken(
        replace(DOUBLE, "    output: integer\n", ""),
        DOUBLE,
        4,
        "functions.double.output: is required",
    ),
    "device-name-with-dot": Broken(
        replace(DEVICES, "  sup2:\n", "  sup.2:\n"),
        DEVICES,
        7,
        "devices['sup.2']: 'sup.2' is not allowed: use letters, digits, '-' and '_' (a device's "
        "mDNS name has no dot)",
    ),
    "bad-admission": Broken(
        replace(DEVICES, "admission: listed", "admission: closed"),
        DEVICES,
        3,
        "admission: Input should be 'open' or 'listed'",
    ),
    "bad-address": Broken(
        replace(
            DEVICES,
            "    labels: {room: kitchen}\n",
            "    labels: {room: kitchen}\n    address: ftp://sup1.local/\n",
        ),
        DEVICES,
        7,
        "devices.sup1.address: 'ftp://sup1.local/' is not allowed",
    ),
    # files and names
    "module-name-not-folder": Broken(
        replace(DOUBLE, "name: double", "name: dbl"),
        DOUBLE,
        1,
        "name 'dbl' must match its folder 'double'",
    ),
    "deployment-name-not-file": Broken(
        replace(DEPLOYMENT, "name: double", "name: twice"),
        DEPLOYMENT,
        2,
        "name 'twice' must match the file name 'double'",
    ),
    "yml-deployment": Broken(
        put({"deployments/extra.yml": "name: extra\nsequence: [{module: fibo, function: fibo}]\n"}),
        "deployments/extra.yml",
        None,
        "is ignored: deployment files end in .yaml",
    ),
    "yml-devices": Broken(
        put({"devices.yml": "admission: listed\n"}),
        "devices.yml",
        None,
        "is ignored: name the file devices.yaml",
    ),
    "module-folder-without-module-yaml": Broken(
        put({"modules/extra/extra.wasm": wat("(module)")}),
        "modules/extra",
        None,
        "has no module.yaml: every module folder needs one",
    ),
    "symlinked-module-yaml": Broken(
        symlink_module_yaml, DOUBLE, None, "is a symbolic link; commit the file itself"
    ),
    "wasm-missing": Broken(
        remove("modules/double/double.wasm"),
        DOUBLE,
        2,
        "wasm file: modules/double/double.wasm does not exist",
    ),
    "wasm-outside-repository": Broken(
        replace(DOUBLE, "wasm: double.wasm", "wasm: ../../../x.wasm"),
        DOUBLE,
        2,
        "wasm file: ../../../x.wasm is outside the repository",
    ),
    "wasm-at-repository-root": Broken(
        # modules/double/../../x.wasm is x.wasm at the root: inside, but missing
        replace(DOUBLE, "wasm: double.wasm", "wasm: ../../x.wasm"),
        DOUBLE,
        2,
        "wasm file: x.wasm does not exist",
    ),
    "wasm-absolute-path": Broken(
        replace(DOUBLE, "wasm: double.wasm", "wasm: /etc/passwd"),
        DOUBLE,
        2,
        "wasm: '/etc/passwd' is not allowed",
    ),
    "invalid-wasm-bytes": Broken(
        put({"modules/double/double.wasm": b"this is not wasm"}),
        "modules/double/double.wasm",
        None,
        "is not valid WebAssembly: magic header not detected",
    ),
    "truncated-wasm": Broken(
        put(
            {
                "modules/double/double.wasm": wat('(module (func (export "double") (param i32)))')[
                    :-3
                ]
            }
        ),
        "modules/double/double.wasm",
        None,
        "is not valid WebAssembly: unexpected end-of-file",
    ),
    # manifest against binary
    "function-not-exported": Broken(
        replace(DOUBLE, "  double:\n", "  triple:\n"),
        DOUBLE,
        4,
        "function 'triple' is not exported by double.wasm (exports: double)",
    ),
    "wrong-parameter-count": Broken(
        replace(DOUBLE, "params: [integer]", "params: [integer, integer]"),
        DOUBLE,
        6,
        "function 'double' takes 1 parameter in double.wasm, but params lists 2",
    ),
    # data files and mounts
    "deployment-mount-without-data-file": Broken(
        replace(BANNER, "data:\n  greeting.txt: greeting.txt\n", ""),
        BANNER,
        9,
        "function 'render' mounts 'greeting.txt' at deployment, but 'data' has no file named "
        "'greeting.txt'",
    ),
    "data-file-not-mounted": Broken(
        append(BANNER, "  extra.txt: greeting.txt\n"),
        BANNER,
        19,
        "data file 'extra.txt' is not mounted by any function",
    ),
    "data-file-missing": Broken(
        replace(BANNER, "greeting.txt: greeting.txt", "greeting.txt: nope.txt"),
        BANNER,
        18,
        "data file 'greeting.txt': modules/banner/nope.txt does not exist",
    ),
    # deployments against modules
    "step-unknown-module": Broken(
        replace(DEPLOYMENT, "module: double", "module: triple"),
        DEPLOYMENT,
        4,
        "step 1: there is no module 'triple'",
    ),
    "step-unknown-function": Broken(
        replace(DEPLOYMENT, "function: double", "function: triple"),
        DEPLOYMENT,
        5,
        "step 1: module 'double' has no function 'triple' (it has: double)",
    ),
    "same-function-twice": Broken(
        append(DEPLOYMENT, "  - module: double\n    function: double\n"),
        DEPLOYMENT,
        7,
        "step 2: double.double is already an earlier step; a deployment can call each module "
        "function once",
    ),
    "integer-into-function-without-params": Broken(
        append(DEPLOYMENT, "  - module: banner\n    function: count\n"),
        DEPLOYMENT,
        7,
        "step 2: banner.count takes no parameters, but receives the integer result of "
        "double.double",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN.values()), ids=list(BROKEN))
def test_broken_repository(tmp_path: Path, case: Broken) -> None:
    root = copy_sample(tmp_path / "repo")
    case.edit(root)
    started = time.perf_counter()
    result = load_folder(root)
    elapsed = time.perf_counter() - started
    assert result.snapshot is None
    assert [(p.file, p.line) for p in result.problems] == [(case.file, case.line)], result.problems
    assert case.fragment in result.problems[0].message
    assert elapsed < 5  # the alias bomb and the rest are refused quickly


def test_the_edits_break_only_what_they_say(tmp_path: Path) -> None:
    """The untouched copy is valid, so each broken case fails for its own edit."""
    assert load_folder(copy_sample(tmp_path / "repo")).problems == ()


def test_binary_over_size_limit(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    (root / "deployments/fibo-chain.yaml").unlink()  # see test_size_limit_on_first_chain_step
    result = load_folder(root, LoaderSettings(max_binary_size=100))
    assert result.snapshot is None
    assert result.problems == (
        Problem(BANNER, 2, "wasm file 'banner.wasm' is 1127 bytes, over the 100 bytes limit"),
        Problem(
            "modules/fibo/module.yaml",
            2,
            "wasm file 'fibo.wasm' is 134 bytes, over the 100 bytes limit",
        ),
    )


def test_data_file_over_size_limit(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    (root / "modules/banner/greeting.txt").write_bytes(b"x" * 2000)
    (root / "deployments/banner.yaml").unlink()
    result = load_folder(root, LoaderSettings(max_binary_size=1500))
    assert result.snapshot is None
    assert result.problems == (
        Problem(
            BANNER,
            18,
            "data file 'greeting.txt' 'greeting.txt' is 2000 bytes, over the 1500 bytes limit",
        ),
    )


def test_size_limit_on_first_chain_step(tmp_path: Path) -> None:
    """fibo, the first step of fibo-chain, is refused: no crash, and no extra problem."""
    root = copy_sample(tmp_path / "repo")
    result = load_folder(root, LoaderSettings(max_binary_size=100))
    assert result.snapshot is None
    assert [(p.file, p.line) for p in result.problems] == [
        (BANNER, 2),
        ("modules/fibo/module.yaml", 2),
    ]
    assert "'fibo.wasm' is 134 bytes, over the 100 bytes limit" in result.problems[1].message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            put({"modules/fibo/fibo.wasm": b"not wasm"}),
            ("modules/fibo/fibo.wasm", None, "is not valid WebAssembly"),
        ),
        (
            replace("deployments/fibo-chain.yaml", "module: fibo", "module: fib"),
            ("deployments/fibo-chain.yaml", 5, "step 1: there is no module 'fib'"),
        ),
        (
            replace("deployments/fibo-chain.yaml", "function: fibo", "function: fib"),
            (
                "deployments/fibo-chain.yaml",
                6,
                "step 1: module 'fibo' has no function 'fib' (it has: fibo)",
            ),
        ),
    ],
    ids=["invalid-first-module", "unknown-first-module", "unknown-first-function"],
)
def test_broken_first_step_of_a_chain(
    tmp_path: Path, edit: Edit, expected: tuple[str, int | None, str]
) -> None:
    """A chain whose first step is broken reports that step once (this used to raise KeyError
    in manifests._check_link)."""
    root = copy_sample(tmp_path / "repo")
    edit(root)
    result = load_folder(root)
    assert result.snapshot is None
    assert [(p.file, p.line) for p in result.problems] == [expected[:2]]
    assert expected[2] in result.problems[0].message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    replace(DOUBLE, "method: get", "method: fetch")(root)
    append(DOUBLE, "    retries: 3\n")(root)
    put({"modules/banner/banner.wasm": b"\0asm\x02\0\0\0"})(root)
    replace(DEVICES, "admission: listed", "admission: closed")(root)
    put({"deployments/extra.yml": "name: extra\n"})(root)
    replace("deployments/banner.yaml", "function: render", "function: paint")(root)
    result = load_folder(root)
    assert result.snapshot is None
    assert [(p.file, p.line) for p in result.problems] == [
        ("deployments/extra.yml", None),
        (DEVICES, 3),
        ("modules/banner/banner.wasm", None),
        (DOUBLE, 5),
        (DOUBLE, 8),
    ]
    assert len(result.problems) == 5
    messages = "\n".join(p.message for p in result.problems)
    for fragment in (
        "deployment files end in .yaml",
        "admission: Input should be 'open' or 'listed'",
        "is not valid WebAssembly",
        "functions.double.method: Input should be 'get' or 'post'",
        "functions.double.retries: unknown key",
    ):
        assert fragment in messages
    # banner.paint is not checked: banner has problems of its own, reported above.


def test_unlisted_devices_are_not_problems(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    replace(
        "deployments/fibo-chain.yaml",
        "device: sup1\n    failovers: [sup2]",
        "device: somewhere-else\n    failovers: [ghost1, ghost2]",
    )(root)
    replace(DEPLOYMENT, "{room: kitchen}", "{room: attic, floor: '9'}")(root)
    result = load_folder(root)
    assert result.problems == ()
    assert result.snapshot is not None
    first = result.snapshot.deployments["fibo-chain"].sequence[0]
    assert (first.device, first.failovers) == ("somewhere-else", ["ghost1", "ghost2"])
    assert result.snapshot.deployments["double"].sequence[0].selector == {
        "room": "attic",
        "floor": "9",
    }


# ---------------------------------------------------------------------------------------------
# Reading commits


def test_ref_ignores_uncommitted_edits(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    sha = git_init_commit(root, "sample")
    replace(DOUBLE, "params: [integer]", "params: [integer, integer]")(root)
    (root / "modules/fibo/fibo.wasm").unlink()

    on_disk = load_folder(root)
    assert on_disk.snapshot is None
    assert {(p.file, p.line) for p in on_disk.problems} == {
        (DOUBLE, 6),
        ("modules/fibo/module.yaml", 2),
    }

    committed = load_ref(root)
    assert committed.problems == ()
    assert committed.snapshot is not None
    assert committed.snapshot.commit_sha == sha
    assert sorted(committed.snapshot.modules) == ["banner", "double", "fibo"]


def test_ref_in_a_subfolder_of_the_repository(tmp_path: Path, sample_repo: Path) -> None:
    root = tmp_path / "outer"
    copy_sample(root / "sample-repo")
    write_files(root, {"README.md": "outer\n", "modules/stray/module.yaml": "not: [valid\n"})
    sha = git_init_commit(root, "with a subfolder")
    result = load_ref(root / "sample-repo")
    assert result.problems == ()
    assert result.snapshot is not None
    assert result.snapshot.commit_sha == sha
    fibo = result.snapshot.modules["fibo"]
    assert fibo.binary.path == "modules/fibo/fibo.wasm"  # relative to the subfolder
    committed = (sample_repo / "modules/fibo/fibo.wasm").read_bytes()
    assert fibo.binary.digest == hashlib.sha256(committed).hexdigest()
    # The repository root is a tree of its own, with the stray module at its top.
    whole = load_ref(root)
    assert [(p.file, p.line) for p in whole.problems] == [("modules/stray/module.yaml", 1)]


def test_ref_reads_an_older_commit(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    first = git_init_commit(root, "good")
    replace(DOUBLE, "output: integer", "output: text/plain")(root)
    git_init_commit(root, "bad")
    assert load_ref(root, "HEAD").snapshot is None
    older = load_ref(root, first)
    assert older.snapshot is not None
    assert older.snapshot.commit_sha == first
    assert load_ref(root, "HEAD~1").snapshot == older.snapshot


def test_symlink_committed_in_git(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    symlink_module_yaml(root)
    git_init_commit(root)
    result = load_ref(root)
    assert result.problems == (Problem(DOUBLE, None, "is a symbolic link; commit the file itself"),)


def test_symlinked_wasm_is_a_problem(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    os.symlink("../fibo/fibo.wasm", root / "modules/double/linked.wasm")
    replace(DOUBLE, "wasm: double.wasm", "wasm: linked.wasm")(root)
    result = load_folder(root)
    assert result.problems == (
        Problem(DOUBLE, 2, "wasm file: modules/double/linked.wasm is a symbolic link"),
    )


def blob_sha(root: Path, ref: str, path: str) -> str:
    return git(root, "rev-parse", f"{ref}:{path}")


def test_cache_reused_across_commits(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    first = git_init_commit(root, "one")
    put(
        {
            "modules/double/double.wasm": wat(
                '(module (func (export "double") (param i32) (result i32)'
                " (i32.shl (local.get 0) (i32.const 1))))"
            ),
            DEPLOYMENT: "name: double\nsequence:\n  - {module: double, function: double}\n",
        }
    )(root)
    second = git_init_commit(root, "two")

    cache = manifests.LoadCache()
    one = load_ref(root, first, cache)
    two = load_ref(root, second, cache)
    assert one.snapshot is not None
    assert two.snapshot is not None
    assert two == load_ref(root, second)  # a fresh cache gives the same result
    assert one == load_ref(root, first)
    assert two.snapshot.commit_sha == second

    wasm_blobs = {
        blob_sha(root, ref, f"modules/{name}/{name}.wasm")
        for ref in (first, second)
        for name in ("banner", "double", "fibo")
    }
    assert len(wasm_blobs) == 4  # three binaries, one of them changed
    # The cache holds what the last load used: the binaries of the second commit.
    assert set(cache.binaries) == {
        blob_sha(root, second, f"modules/{name}/{name}.wasm")
        for name in ("banner", "double", "fibo")
    }
    new_double = cache.binaries[blob_sha(root, second, "modules/double/double.wasm")]
    assert new_double[0] == two.snapshot.modules["double"].binary.digest
    assert blob_sha(root, second, "modules/banner/greeting.txt") in cache.digests
    # Only the manifests of the last commit stay: devices, 3 modules, 3 deployments.
    assert len(cache.manifests) == 7


def test_cache_keeps_results_of_invalid_binaries(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    put({"modules/double/double.wasm": b"garbage"})(root)
    sha = git_init_commit(root)
    cache = manifests.LoadCache()
    first = load_ref(root, sha, cache)
    again = load_ref(root, sha, cache)
    assert first == again
    assert [(p.file, p.line) for p in again.problems] == [("modules/double/double.wasm", None)]
    assert "is not valid WebAssembly" in again.problems[0].message


def test_identical_broken_files_by_ref(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    put({"modules/x/module.yaml": "", "modules/y/module.yaml": ""})(root)
    git_init_commit(root)
    expected = [("modules/x/module.yaml", None), ("modules/y/module.yaml", None)]
    assert [(p.file, p.line) for p in load_folder(root).problems] == expected
    assert [(p.file, p.line) for p in load_ref(root).problems] == expected


def test_cache_after_renaming_a_broken_file(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    put({"deployments/a.yaml": "name: [\n"})(root)
    git_init_commit(root, "one")
    cache = manifests.LoadCache()
    assert [p.file for p in load_ref(root, cache=cache).problems] == ["deployments/a.yaml"]
    git(root, "mv", "deployments/a.yaml", "deployments/b.yaml")
    git_init_commit(root, "two")
    assert [p.file for p in load_ref(root).problems] == ["deployments/b.yaml"]
    assert [p.file for p in load_ref(root, cache=cache).problems] == ["deployments/b.yaml"]


def test_unchanged_modules_are_reused_and_binaries_not_reinspected(tmp_path: Path) -> None:
    root = copy_sample(tmp_path / "repo")
    first = git_init_commit(root, "one")
    manifest = root / "modules/fibo/module.yaml"
    manifest.write_text(manifest.read_text().replace("method: get", "method: post"))
    second = git_init_commit(root, "fibo is queued now")
    cache = manifests.LoadCache()
    one = load_ref(root, first, cache)
    fibo_facts = cache.binaries[blob_sha(root, first, "modules/fibo/fibo.wasm")]
    two = load_ref(root, second, cache)
    assert one.snapshot is not None
    assert two.snapshot is not None
    assert two.snapshot.modules["double"] is one.snapshot.modules["double"]
    assert two.snapshot.modules["fibo"] is not one.snapshot.modules["fibo"]
    assert two.snapshot.modules["fibo"].spec.functions["fibo"].method == "post"
    # Only the manifest changed: the binary's inspection is the very same object.
    assert cache.binaries[blob_sha(root, second, "modules/fibo/fibo.wasm")] is fibo_facts
