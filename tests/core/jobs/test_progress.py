"""Training progress travels as a record: what the task publishes is what `/status` reads back."""

from __future__ import annotations

from core.jobs.progress import JobStage, TrainingProgress, from_metadata, stage_progress, to_metadata


def test_the_training_record_reads_back_what_it_wrote() -> None:
    wrote = TrainingProgress(
        epoch=1.25, step=7, total=40, loss=2.3456, tokens_per_second=812.4, ended="paused"
    )
    got = from_metadata(TrainingProgress, to_metadata(wrote))
    assert got is not None and (got.epoch, got.step, got.total, got.loss) == (1.25, 7, 40, 2.3456)
    assert got == wrote
    assert from_metadata(TrainingProgress, {}) is None and from_metadata(TrainingProgress, None) is None
    assert from_metadata(TrainingProgress, {"stage": "train", "doing": "x"}) is None  # another record
    no_loss = from_metadata(TrainingProgress, to_metadata(TrainingProgress(epoch=0.1, step=1, total=2)))
    assert no_loss is not None and no_loss.loss is None


def test_the_ui_line_says_what_the_record_holds() -> None:
    line = TrainingProgress(epoch=1.25, step=7, total=40, loss=2.3456, tokens_per_second=812.4).describe()
    assert line == "epoch 1.25 · step 7/40 · loss 2.3456 · 812 tokens/s"
    assert JobStage(stage="extract", doing="extracting").describe() == "extract: extracting"


def test_stage_progress_maps_a_stage_fraction_onto_the_whole_job() -> None:
    assert stage_progress("monitor") == 0.0 and stage_progress("promote", 1.0) == 100.0
    assert stage_progress("train", 0.5) == 45.0
    assert stage_progress("train", 2.0) == 75.0  # clamped to the stage
