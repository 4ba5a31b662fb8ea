"""Downloading a deploy body's module files during `/deploy`, as the supervisor does.

Module by module: the binary, then every `urls.other` file, and only then the check of their
statuses, so a failed download still lets that module's other files be fetched (corpus
binary-404) while later modules are not. Binaries are stored by module name and data files in
the module's own folder: both are shared by every deployment on the device (protocol §3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .deployment import ModuleFiles
from .execution import safe_name


async def fetch_module(
    module: Any, *, client: httpx.AsyncClient, folder: Path, timeout: float, fail: bool
) -> ModuleFiles:
    """Download and store one module of a body; raises what makes the deploy a 500.

    `fail` makes every download fail (the FAIL_DOWNLOADS fault).
    """

    async def download(url: Any) -> httpx.Response:
        if fail:
            raise ConnectionError(f"simulated download failure of {url}")
        if not isinstance(url, str):
            raise TypeError(f"not a URL: {url!r}")
        return await client.get(url, timeout=timeout, follow_redirects=True)

    binary = await download(module["urls"]["binary"])
    # `urls.other` must be an object if present (corpus urls-other-list).
    others = {
        name: await download(url) for name, url in module.get("urls", {}).get("other", {}).items()
    }
    failed = [response for response in (binary, *others.values()) if response.status_code >= 400]
    if failed:
        raise RuntimeError(f"{len(failed)} fetch failures")
    name = safe_name(module["name"])
    binary_path = folder / "modules" / name
    binary_path.write_bytes(binary.content)
    module_folder = folder / "params" / name
    module_folder.mkdir(exist_ok=True)
    data_files = {}
    for file_name, response in others.items():
        data_files[file_name] = module_folder / safe_name(file_name)
        data_files[file_name].write_bytes(response.content)
    return ModuleFiles(module["id"], name, binary_path, data_files)
