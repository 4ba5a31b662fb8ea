"""The prune guard as a plan words it: how many deployments, from how many devices.

Pure: what runs before the change (deploy bodies per device) and the deployments of head go in;
the counts the orchestrator's guard judges (design §2, `planning.plan`) come out, in the words a
reviewer thinks in: "would remove 4 of 5 deployments from 3 devices". The guard itself counts
(device, deployment) pairs, so that figure is given too: it is what the limit is compared with.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from ..models import DeviceId
from . import wording


@dataclass(frozen=True)
class PruneGuard:
    deployments_removed: int
    """Running deployments that head removes from the repository."""
    deployments_running: int
    """Deployments running on at least one device."""
    devices: int
    """Devices that run a removed deployment."""
    pairs_removed: int
    pairs_running: int
    """(device, deployment) pairs: what the orchestrator compares with the limit."""
    limit: float

    @property
    def held(self) -> bool:
        """The orchestrator's rule (`planning.plan`): more than `limit` of the pairs removed."""
        return bool(self.pairs_running) and self.pairs_removed / self.pairs_running > self.limit

    @property
    def text(self) -> str:
        share = self.pairs_removed / self.pairs_running if self.pairs_running else 0.0
        sign = ">" if self.held else "≤"
        running = wording.count(self.deployments_running, "deployment")
        text = (
            f"would remove {self.deployments_removed} of {running} from "
            f"{wording.count(self.devices, 'device')} ({self.pairs_removed} of "
            f"{self.pairs_running} (device, deployment) pairs, {share:.0%} {sign} the "
            f"{self.limit:.0%} prune limit)"
        )
        if self.held:
            text += (
                ": the orchestrator would hold this commit, applying none of it, until a later "
                "commit keeps them or the prune limit is raised"
            )
        return text


def prune_guard(
    running: Mapping[DeviceId, Mapping[str, Any]], *, deployments: Set[str], limit: float
) -> PruneGuard | None:
    """The guard's counts when head (with `deployments`) removes some of what runs; else None.

    Only a deployment gone from the repository counts, as in `planning.plan`: one that moves or
    waits for a device is still desired.
    """
    gone = {name for deployed in running.values() for name in deployed} - set(deployments)
    if not gone:
        return None
    removed_pairs = {device: gone & deployed.keys() for device, deployed in running.items()}
    return PruneGuard(
        deployments_removed=len(gone),
        deployments_running=len({name for deployed in running.values() for name in deployed}),
        devices=sum(1 for names in removed_pairs.values() if names),
        pairs_removed=sum(len(names) for names in removed_pairs.values()),
        pairs_running=sum(len(deployed) for deployed in running.values()),
        limit=limit,
    )
