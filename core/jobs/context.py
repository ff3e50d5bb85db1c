"""The running job's side of the job contract: its directory, its progress and its pause point.

The retrain flow makes one `JobContext` when it starts and goes through it at every stage, so the
flow's body reads as the pipeline while pausing and progress work the same way everywhere:

    job = JobContext.start(settings)
    job.enter("extract", "extracting")   # a task boundary: pause here if asked, then say so
    job.progress("extract", 0.5, "...")  # how far the stage is
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from core.jobs import progress as job_progress
from core.jobs.directory import JobDir
from core.jobs.orchestrator import flow_run_id, rename_flow_run
from core.jobs.pause import PausePoint
from core.jobs.progress import JOB_PROGRESS_KEY, JobStage, stage_progress
from core.processes import die_with_parent
from core.settings import Settings


@dataclass
class JobContext:
    """One attempt of a job's flow run."""

    settings: Settings
    id: UUID
    dir: JobDir
    pause: PausePoint
    artifact: UUID

    @classmethod
    def start(cls, settings: Settings) -> JobContext:
        """Begin an attempt: follow the runner's life, record this process, clear what a crash left."""
        run_id = flow_run_id()
        folder = JobDir.of(settings, run_id)
        die_with_parent()  # a killed runner takes its runs with it: the watchdog then marks them crashed
        folder.record_process()
        folder.sweep_staging()  # a crashed earlier attempt of this run may have left staging files
        pause = PausePoint(run_id, settings.jobs.pause_timeout_s, can_suspend=True)
        artifact = job_progress.create(JOB_PROGRESS_KEY, JobStage(stage="monitor", doing="starting"))
        return cls(settings, run_id, folder, pause, artifact)

    def enter(self, stage: str, doing: str) -> None:
        """A task boundary: pause here when asked, then show `stage` as started."""
        self.pause.check(stage)
        self.progress(stage, 0.0, doing)

    def progress(self, stage: str, fraction: float, doing: str) -> None:
        job_progress.publish(
            self.artifact, stage_progress(stage, fraction), JobStage(stage=stage, doing=doing)
        )

    def stage_progress(self, stage: str, doing: str) -> Callable[[float], None]:
        """A callback for a stage's own progress (a fraction of it done)."""
        return lambda fraction: self.progress(stage, fraction, doing)

    def rename(self, name: str) -> None:
        rename_flow_run(self.id, name)
