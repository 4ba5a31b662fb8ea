"""Running a deployment, as the original's `POST /execute/<deployment>` did (protocol §4).

The first step's endpoint is called on its device with the arguments as `param0, param1, ...`
(and input files as multipart parts); the `resultUrl` it answers is followed, hop by hop along
the chain, until the last step's result is there, failed, or the wait is over. An integer
result is returned as a number, a file result as the URL to fetch it from its device.
Every answer is read through `SupervisorClient.fetch`, bounded in size and nesting: a hostile
device fails the run with a 502, never with an exception out of the route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import RunFailed, SupervisorError, SupervisorUnreachable
from .store import Store
from .supervisor import Answer, SupervisorClient

# How often a pending result is asked for again.
POLL = 0.05
# Seconds the first call may take even when the wait is shorter.
FIRST_CALL_MIN = 1.0


@dataclass(frozen=True)
class RunResult:
    result: Any
    result_url: str


class Runner:
    def __init__(self, store: Store, supervisor: SupervisorClient) -> None:
        self.store = store
        self.supervisor = supervisor

    async def run(
        self,
        deployment: str,
        *,
        args: Sequence[str],
        files: Mapping[str, tuple[str, bytes, str]],
        wait: float,
    ) -> RunResult:
        """Call the deployment's first step and follow its results to the end."""
        deadline = time.monotonic() + wait
        url, method = await asyncio.to_thread(self._entry, deployment, len(args))
        params = {f"param{index}": value for index, value in enumerate(args)}
        try:
            # A GET runs before it answers, so the first call shares the wait; it gets at least
            # a moment, so that `?wait=0` still returns the resultUrl to follow.
            async with asyncio.timeout(max(FIRST_CALL_MIN, deadline - time.monotonic())):
                answer = await self.supervisor.fetch(
                    method.upper(), url, params=params, files=dict(files) or None
                )
            result_url = _json(answer).get("resultUrl") if answer.is_success else None
        except TimeoutError as exc:
            raise RunFailed(
                504, f"the first step's device did not answer within {wait:g} s"
            ) from exc
        except SupervisorUnreachable as exc:
            raise RunFailed(502, f"the first step's device did not answer: {exc}") from exc
        except SupervisorError as exc:
            raise RunFailed(502, f"the first step's device answered badly: {exc}") from exc
        if not isinstance(result_url, str):
            raise RunFailed(502, f"the first step's device answered {answer.status_code}")
        return await self._follow(result_url, deadline=deadline)

    def _entry(self, deployment: str, given: int) -> tuple[str, str]:
        snapshot = self.store.desired_snapshot()
        spec = snapshot.deployments.get(deployment) if snapshot else None
        if snapshot is None or spec is None:
            raise RunFailed(404, f"no deployment {deployment!r} in the desired commit")
        first = spec.sequence[0]
        function = snapshot.modules[first.module].spec.functions[first.function]
        # The device matches arguments to the wasm parameters by position and fails the run
        # on a wrong count: that is the caller's mistake, said before any device is called.
        if given != len(function.params):
            raise RunFailed(
                400, f"{first.module}.{first.function} takes {len(function.params)} "
                f"argument(s) (param0...), got {given}",
            )  # fmt: skip
        placed = {(s.deployment, s.step): s for s in self.store.step_placements()}
        step = placed.get((deployment, 0))
        device = self.store.device(step.device) if step and step.device else None
        if step is None or device is None:
            reason = step.reason if step else "not placed yet"
            raise RunFailed(503, f"{deployment} is not deployed: {reason}")
        statuses = {(s.device, s.deployment): s.status for s in self.store.deploy_statuses()}
        if statuses.get((device.device, deployment)) != "synced":
            raise RunFailed(503, f"{deployment} is not deployed on {device.device} yet")
        path = f"/{deployment}/modules/{first.module}/{first.function}"
        return device.url + path, function.method.value

    async def _follow(self, result_url: str, *, deadline: float) -> RunResult:
        url = result_url
        while True:
            if time.monotonic() > deadline:
                raise RunFailed(504, "the result is not ready yet", result_url=url)
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    answer = await self.supervisor.fetch("GET", url)
                if answer.status_code == 404:  # pending: queued or still running
                    await asyncio.sleep(POLL)
                    continue
                entry = _json(answer)
            except TimeoutError as exc:
                raise RunFailed(504, "the result is not ready yet", result_url=url) from exc
            except SupervisorError as exc:
                raise RunFailed(502, f"cannot read {url}: {exc}", result_url=url) from exc
            if answer.status_code != 200 or not entry.get("success", True):
                detail = entry.get("result") or answer.text[:200]
                raise RunFailed(502, f"the run failed at {url}: {detail}", result_url=url)
            result = entry.get("result")
            if isinstance(result, str) and result.startswith(("http://", "https://")):
                url = result  # a chained step: its result is the next hop's resultUrl
                continue
            return RunResult(_decoded(result, entry, url), url)


def _decoded(result: Any, entry: Mapping[str, Any], url: str) -> Any:
    """`["233", null]` is 233; `[null, ["out.bin"]]` is the URL of out.bin on its device."""
    if not isinstance(result, list) or len(result) != 2:
        return result
    value, files = result
    if files:
        parts = urlsplit(url)
        module = entry.get("module_name", "")
        return f"{parts.scheme}://{parts.netloc}/module_results/{module}/{files[0]}"
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _json(answer: Answer) -> dict[str, Any]:
    """The answer's JSON object, or {} (too deep raises the device's SupervisorRejected)."""
    document = answer.json()
    return document if isinstance(document, dict) else {}
