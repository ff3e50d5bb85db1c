"""A job's directory, `<home>/jobs/<job id>/`: the one place that knows its layout and reads it back typed.

    plan.json          what the first attempt decided (project, repo, commit): a resumed run keeps to it
    pid                `host pid` of the process running the job (the watchdog's evidence)
    dataset/           the extracted, validated dataset (stats.json, validation.json)
    run/               the training run (train.json, checkpoints/, adapter/, eval.json, lineage.json)
    run/export/        the GGUFs and export.json
    promote.json       the promote gate's decision

The retrain flow writes it, the API and the CLI read it, the watchdog sweeps it; none of them spells
a file name of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from core.atomic import write_json
from core.reports import EvalReport, ExportReport, ExtractReport, KnowledgeReport, PromoteDecision, Report
from core.settings import Settings

R = TypeVar("R", bound=BaseModel)
RT = TypeVar("RT", bound=Report)


class Plan(BaseModel):
    """What a job's first attempt decided; a resumed attempt reads it instead of deciding again."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = None
    repo: str | None = None
    commit: str | None = None
    dataset_ready: bool = False


@dataclass(frozen=True)
class JobDir:
    """The directory of one job; its id is a UUID, so it never escapes `<home>/jobs/`."""

    root: Path

    @classmethod
    def of(cls, settings: Settings, job_id: UUID | str) -> JobDir:
        return cls(settings.home / "jobs" / str(UUID(str(job_id))))

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def export(self) -> Path:
        return self.run / "export"

    @property
    def pid_file(self) -> Path:
        return self.root / "pid"

    # typed readers: None when the stage has not written its report (yet)

    def plan(self) -> Plan:
        return _read(self.root / "plan.json", Plan) or Plan()

    def write_plan(self, plan: Plan) -> None:
        write_json(self.root / "plan.json", plan.model_dump(mode="json"))

    def stats(self) -> ExtractReport | None:
        return read_report(self.dataset, ExtractReport)

    def evaluation(self) -> EvalReport | None:
        return read_report(self.run, EvalReport)

    def exported(self) -> ExportReport | None:
        return read_report(self.export, ExportReport)

    def knowledge(self) -> KnowledgeReport | None:
        return read_report(self.root, KnowledgeReport)

    def promotion(self) -> PromoteDecision | None:
        return read_report(self.root, PromoteDecision)

    def write_promotion(self, decision: PromoteDecision) -> None:
        write_json(self.root / PromoteDecision.FILE, decision.model_dump(mode="json"))

    # the process running the job, and what an interrupted one left behind

    def record_process(self) -> None:
        """Write `host pid` of this process: the watchdog checks that it is alive."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{socket.gethostname()} {os.getpid()}\n")

    def process_gone(self) -> bool:
        """True when the job's recorded process ran on this host and is no longer alive."""
        try:
            host, pid = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return False  # another host's worker: Prefect's heartbeats are the judge there
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _zombie(int(pid))

    def sweep_staging(self) -> list[str]:
        """Remove what an interrupted atomic write left: every dot-named entry. Returns what went.

        forgeflow stages files and directories under dot names (`core.atomic`) and never publishes
        one, so a dot name inside a job directory is always a leftover.
        """
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for path in sorted(self.root.rglob(".*"), key=lambda p: len(p.parts)):
            if not path.exists() and not path.is_symlink():
                continue  # inside a directory removed just before
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(self.root)))
        return removed


def read_report(folder: Path, kind: type[RT]) -> RT | None:
    """The `kind.FILE` report in `folder`, typed; None when it is missing or unreadable."""
    return _read(folder / kind.FILE, kind)


def _read(path: Path, kind: type[R]) -> R | None:
    try:
        return kind.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"
