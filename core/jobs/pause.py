"""Pausing a flow run: one protocol for the retrain flow (jobs) and the finetune flow.

A pause request is a Prefect variable, `forgeflow-pause-<flow run id hex>`, so it lives in Prefect
with the rest of the run's state and reaches runners on any host. The API's pause route sets it;
resuming clears it. The flow honours it at every task boundary (`PausePoint.check`) and, through
`PausePoint.requested` (throttled to one Prefect read every 2 s), at every training step, where
training checkpoints and stops first.

Honouring it suspends the run when it can: a flow run of a deployment exits, frees its concurrency
slot, and re-runs from the top when resumed, finding its finished stages done. A flow run with no
deployment (`forgeflow pipeline` runs the finetune flow in-process) cannot be re-run by Prefect,
so it pauses in place until it is resumed (the UI's Resume button) or its timeout passes.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

POLL_S = 2.0  # how often training asks Prefect for a pause request

log = logging.getLogger(__name__)


def pause_variable(run_id: UUID | str) -> str:
    """The Prefect variable whose presence asks the flow run to pause."""
    return f"forgeflow-pause-{UUID(str(run_id)).hex}"


async def request_pause(run_id: UUID, request_id: str) -> None:
    from prefect.variables import Variable

    await Variable.aset(pause_variable(run_id), request_id, overwrite=True)


async def drop_request(run_id: UUID) -> None:
    """Forget a request the run has not honoured yet (on resume and cancel)."""
    from prefect.variables import Variable

    await Variable.aunset(pause_variable(run_id))


class PausePoint:
    """The running flow's side of the protocol."""

    def __init__(self, run_id: UUID, timeout_s: int, *, can_suspend: bool) -> None:
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.can_suspend = can_suspend
        self._last_poll = 0.0
        self._asked = False

    def requested(self) -> bool:
        """Whether a pause was requested; asks Prefect at most every `POLL_S` (training's per step)."""
        now = time.monotonic()
        if not self._asked and now - self._last_poll >= POLL_S:
            self._last_poll = now
            self._asked = self._request() is not None
        return self._asked

    def check(self, stage: str) -> None:
        """A task boundary: pause here when a pause was requested."""
        if self._request() is not None:
            log.info("pause requested: pausing before %s", stage)
            self.pause(stage)

    def pause(self, stage: str) -> None:
        """Honour the request: suspend (or pause in place), then carry on once resumed."""
        from prefect.flow_runs import pause_flow_run, suspend_flow_run
        from prefect.variables import Variable

        request = self._request()
        Variable.unset(pause_variable(self.run_id))
        self._asked = False
        # the request's id keys the pause: Prefect honours each key once, so a resumed run passes it
        key = f"{stage}-{request}"
        if self.can_suspend:
            suspend_flow_run(timeout=self.timeout_s, key=key)
        else:
            pause_flow_run(timeout=self.timeout_s, key=key)

    def _request(self) -> str | None:
        from prefect.variables import Variable

        value = Variable.get(pause_variable(self.run_id), default=None)
        return None if value is None else str(value)
