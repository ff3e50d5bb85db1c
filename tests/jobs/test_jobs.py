"""Jobs through HTTP on the real stack: from `POST /v1/fine-tune` to a served model, and bad input."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import openai

from tests.helpers.stack import Stack
from tests.jobs.conftest import fine_tune


def test_a_fine_tune_job_ends_as_a_served_champion(stack: Stack, job_dataset: Path) -> None:
    reply = fine_tune(stack, job_dataset, project_name="tinyjob", auto_deploy=True, promote=True)
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert job["status"] == "queued"
    done = stack.wait(job["job_id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100.0
    # the same truth in Prefect: the flow run is Completed, and named after its flow
    run = httpx.get(f"{stack.prefect}/api/flow_runs/{job['job_id']}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED"
    # the evaluation with the real perplexity, and the model deployed as the champion
    validated = httpx.post(f"{stack.api}/validate/{job['job_id']}", timeout=30).json()
    assert validated["passed"] in (True, False)
    assert validated["metrics"]["perplexity"] > 1.0
    promote = json.loads((stack.home / "jobs" / job["job_id"] / "promote.json").read_text())
    deployed = httpx.post(f"{stack.api}/deploy/{job['job_id']}", timeout=120)
    assert deployed.status_code == 200, deployed.text
    body = deployed.json()
    assert body["success"] is True and body["model_name"] == promote["candidate"]
    client = openai.OpenAI(base_url=f"{stack.api}/v1", api_key="unused", max_retries=0, timeout=60)
    answer = client.chat.completions.create(
        model=body["model_name"],
        messages=[{"role": "user", "content": "Where is load_config?"}],
        max_tokens=4,
    )
    assert answer.choices[0].message.content is not None
    if promote["promote"]:
        champion = httpx.get(f"{stack.api}/models/tinyjob:champion", timeout=10).json()
        assert champion["version"] == promote["candidate"].split(":")[1]


def test_a_repeated_idempotency_key_returns_the_same_job(stack: Stack, job_dataset: Path) -> None:
    key = f"test-{uuid.uuid4()}"
    first = fine_tune(stack, job_dataset, key=key).json()
    second = fine_tune(stack, job_dataset, key=key).json()
    assert first["job_id"] == second["job_id"]
    other = fine_tune(stack, job_dataset, key=f"{key}-other").json()
    assert other["job_id"] != first["job_id"]
    for job in (first["job_id"], other["job_id"]):
        httpx.post(f"{stack.api}/v1/retrain/{job}/cancel", timeout=30)


def test_the_status_of_an_unknown_job_is_404(stack: Stack) -> None:
    reply = httpx.get(f"{stack.api}/status/{uuid.uuid4()}", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "JOB_NOT_FOUND"
    assert httpx.get(f"{stack.api}/status/not-a-uuid", timeout=10).status_code in (400, 422)


def test_bad_parameters_are_refused_before_any_flow_run_exists(stack: Stack, job_dataset: Path) -> None:
    before = httpx.get(f"{stack.api}/jobs?limit=1", timeout=10).json()["total"]
    cases = [
        ({"dataset": str(job_dataset), "profile": "no-such-profile"}, 404),
        ({"dataset": str(job_dataset.parent / "missing")}, 404),
        ({"dataset": str(job_dataset), "base_model": "no/such-model"}, 404),
        ({"dataset": str(job_dataset), "method": "qlora"}, 409),
        ({"dataset": "/etc"}, 403),
        ({"dataset": str(job_dataset), "repo": "."}, 400),
        ({"dataset": str(job_dataset), "rank": 0}, 400),
        ({"dataset": str(job_dataset), "epochs": -1}, 400),
        ({"repo": "ftp://example.com/x.git"}, 400),
    ]
    for body, status in cases:
        reply = httpx.post(f"{stack.api}/v1/fine-tune", json=body, timeout=30)
        assert reply.status_code == status, (body, reply.text)
        error = reply.json()["error"]
        assert "Traceback" not in error["message"] and "/tmp/" not in error["message"], error
    assert httpx.get(f"{stack.api}/jobs?limit=1", timeout=10).json()["total"] == before


def test_pausing_resuming_or_cancelling_a_finished_job_is_409(stack: Stack, job_dataset: Path) -> None:
    job = fine_tune(stack, job_dataset, promote=False).json()["job_id"]
    assert stack.wait(job)["status"] == "completed"
    for action in ("pause", "resume", "cancel"):
        reply = httpx.post(f"{stack.api}/v1/retrain/{job}/{action}", timeout=30)
        assert reply.status_code == 409, reply.text
        assert reply.json()["error"]["code"] == "JOB_STATE_CONFLICT"


def test_jobs_are_listed_newest_first_and_filtered_by_status(stack: Stack, job_dataset: Path) -> None:
    job = fine_tune(stack, job_dataset, promote=False).json()["job_id"]
    stack.wait(job)
    page = httpx.get(f"{stack.api}/jobs?limit=2", timeout=30).json()
    assert page["jobs"][0]["job_id"] == job and page["total"] >= 1 and page["pages"] >= 1
    completed = httpx.get(f"{stack.api}/jobs?status=completed&limit=50", timeout=30).json()["jobs"]
    assert job in [j["job_id"] for j in completed] and {j["status"] for j in completed} == {"completed"}
    assert httpx.get(f"{stack.api}/jobs?status=bogus", timeout=30).status_code == 400
