"""Apply a plan's actions to devices: the side-effects `planning.plan` leaves to others.

Devices are worked on in parallel (bounded), each device's actions in order (undeploys first,
so a device never holds a stale and a new deployment of one module at once). Each action is
retried with exponential backoff and jitter; a device that stays unreachable has its remaining
actions failed without more waiting. One failing device never holds up the others. Nothing is
recorded here: outcomes are returned to the reconciler, which records the whole pass at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .core.planning import Action, Deploy, Undeploy
from .errors import SupervisorError, SupervisorUnreachable
from .settings import ReconcileSettings


class Supervisor(Protocol):
    async def deploy(self, base_url: str, body: dict[str, Any]) -> None: ...

    async def undeploy(self, base_url: str, deployment: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    action: Action
    ok: bool
    attempts: int
    at: float
    error: str | None = None


async def execute(
    actions: Sequence[Action],
    *,
    urls: Mapping[str, str],
    supervisor: Supervisor,
    settings: ReconcileSettings,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Outcome]:
    """Run `actions` against the devices at `urls`; an outcome for every action."""
    by_device: dict[str, list[Action]] = {}
    for action in actions:
        by_device.setdefault(action.device, []).append(action)
    gate = asyncio.Semaphore(settings.concurrency)

    async def one_device(device: str, work: list[Action]) -> list[Outcome]:
        async with gate:
            ordered = sorted(work, key=lambda a: (isinstance(a, Deploy), a.deployment))
            return await _device_actions(
                urls[device], ordered, supervisor=supervisor, settings=settings, clock=clock,
                sleep=sleep,
            )  # fmt: skip

    results = await asyncio.gather(*(one_device(d, w) for d, w in sorted(by_device.items())))
    return [outcome for outcomes in results for outcome in outcomes]


async def _device_actions(
    url: str,
    actions: list[Action],
    *,
    supervisor: Supervisor,
    settings: ReconcileSettings,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    unreachable: str | None = None
    for action in actions:
        if unreachable is not None:
            outcomes.append(Outcome(action, False, 0, clock(), unreachable))
            continue
        for attempt in range(1, settings.attempts + 1):
            try:
                await _apply(action, url, supervisor)
                outcomes.append(Outcome(action, True, attempt, clock()))
                break
            except SupervisorError as exc:
                if attempt == settings.attempts:
                    outcomes.append(Outcome(action, False, attempt, clock(), str(exc)))
                    if isinstance(exc, SupervisorUnreachable):
                        unreachable = f"not tried: the device is unreachable ({exc})"
                    break
                # Jitter keeps a fleet of devices that failed together from retrying in step.
                delay = settings.retry_backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                await sleep(delay)
    return outcomes


async def _apply(action: Action, url: str, supervisor: Supervisor) -> None:
    if isinstance(action, Undeploy):
        await supervisor.undeploy(url, action.deployment)
    else:
        await supervisor.deploy(url, dict(action.body))
