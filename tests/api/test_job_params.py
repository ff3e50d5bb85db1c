"""The API's job bodies are built from the retrain flow's parameters, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from api.schemas.jobs import FineTuneRequest, RetrainRequest
from core.jobs.params import AUTO_DEPLOY, RetrainParams, TrainingChoices


def _schema(model: type[Any], field: str) -> dict[str, Any]:
    return dict(model.model_json_schema()["properties"][field])


def test_every_training_field_of_a_fine_tune_is_the_flows_own() -> None:
    for field in TrainingChoices.model_fields:
        assert _schema(FineTuneRequest, field) == _schema(RetrainParams, field), field
        assert FineTuneRequest.model_fields[field].default == RetrainParams.model_fields[field].default, field


def test_retrain_requests_share_the_flows_defaults_and_triggers() -> None:
    for field in ("project_name", "auto_deploy", "trigger"):
        assert _schema(RetrainRequest, field) == _schema(RetrainParams, field), field
    assert AUTO_DEPLOY is True  # the one documented default: a new champion is served at once
    assert RetrainRequest(project_path="/r").auto_deploy is AUTO_DEPLOY
    assert FineTuneRequest(dataset="/d").auto_deploy is AUTO_DEPLOY
    assert RetrainParams(dataset="/d").auto_deploy is AUTO_DEPLOY


def test_a_fine_tune_request_becomes_the_flows_parameters() -> None:
    params = FineTuneRequest(repo="/r", use_pissa=True, rank=8, profile="cpu-quick").params()
    assert isinstance(params, RetrainParams)
    assert (params.method, params.force, params.trigger, params.rank) == ("pissa", True, "fine-tune", 8)
    sent = params.flow_parameters()
    assert RetrainParams.model_validate(sent) == params  # what the flow run receives validates as itself
    assert "use_pissa" not in sent and "dataset" not in sent
