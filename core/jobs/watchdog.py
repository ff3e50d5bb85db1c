"""Jobs whose process died end `crashed`, within `jobs.crash_after_s`, instead of Running forever.

Prefect OSS does not notice a flow-run process that vanished (kill -9, out of memory, reboot).
Each job records `host pid` in its directory (`JobDir.record_process`); the stack's supervisor
calls `check_jobs` every few seconds and marks a running job whose process is gone as Crashed.
Resuming such a job (`POST /v1/retrain/{id}/resume`) reschedules it, and training continues from
its last checkpoint. Jobs on other hosts are left to Prefect's heartbeats.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.states import Crashed

from core.jobs import orchestrator
from core.jobs.directory import JobDir
from core.jobs.status import TRAINING_DEPLOYMENT
from core.settings import Settings

log = logging.getLogger(__name__)


class Watchdog:
    """Remembers since when each running job's process has been gone; crashes it past the limit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gone_since: dict[UUID, float] = {}

    def check(self) -> list[UUID]:
        """One pass; returns the jobs it marked crashed."""
        crashed: list[UUID] = []
        now = time.monotonic()
        runs = orchestrator.post_sync(
            "/flow_runs/filter",
            {
                "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
                "deployments": {"name": {"any_": [TRAINING_DEPLOYMENT]}},
                "limit": 200,
            },
        )
        gone = set()
        for run in runs:
            job_id = UUID(run["id"])
            if not JobDir.of(self.settings, job_id).process_gone():
                continue
            gone.add(job_id)
            first = self.gone_since.setdefault(job_id, now)
            if now - first < self.settings.jobs.crash_after_s:
                continue
            message = "its process is gone (killed, out of memory or a reboot): resume it to continue"
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(job_id, Crashed(message=message), force=True)
            JobDir.of(self.settings, job_id).sweep_staging()
            log.warning("job %s crashed: %s", job_id, message)
            crashed.append(job_id)
        self.gone_since = {k: v for k, v in self.gone_since.items() if k in gone and k not in crashed}
        return crashed


def sweep_stopped_jobs(settings: Settings) -> int:
    """Start-up sweep: clear staging leftovers in the directories of jobs that are not running."""
    root = settings.home / "jobs"
    ids = []
    for path in root.iterdir() if root.is_dir() else []:
        try:
            ids.append(UUID(path.name))
        except ValueError:
            continue
    if not ids:
        return 0
    runs = orchestrator.post_sync(
        "/flow_runs/filter", {"flow_runs": {"id": orchestrator.any_of(ids)}, "limit": len(ids)}
    )
    running = {UUID(r["id"]) for r in runs if (r.get("state") or {}).get("type") in ("RUNNING", "PENDING")}
    return sum(len(JobDir.of(settings, i).sweep_staging()) for i in ids if i not in running)
