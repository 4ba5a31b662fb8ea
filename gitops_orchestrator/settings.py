"""Every default of the orchestrator, in one place.

Each group is a frozen dataclass handed only to the component that owns it; `cli` builds them
from flags and `GITOPS_*` environment variables. Sizes are bytes, durations float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class LoaderSettings:
    """How much of a repository the loader is willing to read."""

    max_binary_size: int = 64 * MIB
    """Largest wasm binary or data file accepted, in bytes (`GITOPS_MAX_BINARY_SIZE`).
    64 MiB is far above any module an IoT device can run, and small enough that a commit of a
    stray disk image is a problem instead of an outage."""

    max_manifest_size: int = 1 * MIB
    """Largest YAML file accepted, in bytes. Hand-written manifests are a few KiB."""

    max_yaml_nodes: int = 100_000
    """Most YAML nodes one file may expand to, so alias bombs ("billion laughs") stop early."""
