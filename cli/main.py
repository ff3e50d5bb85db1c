"""The `forgeflow` command line: every command module's commands, registered on the one app.

Command modules (`data`, `training`, `models`, `serving`) import only `cli.app` and the layers
below; this module is the only one that imports them, so cli/ has no import circle.
"""

from __future__ import annotations

from cli import bench, data, hooks, index, jobs, models, serving, stack, training
from cli.app import app

app.command()(data.monitor)
app.command()(data.extract)
app.command()(data.validate)
app.command()(data.prepare)
app.command()(training.finetune)
app.command()(training.evaluate)
app.command(name="export")(training.export_gguf)
app.command()(training.pipeline)
app.command()(serving.serve)
app.command()(bench.bench)
app.command()(serving.deploy)
app.add_typer(models.models_app, name="models")
app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command(hidden=True)(stack.supervise)
app.command(hidden=True)(stack.runner)
app.command()(jobs.retrain)
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(hooks.hooks_app, name="hooks")
app.add_typer(index.index_app, name="index")

__all__ = ["app"]

if __name__ == "__main__":
    app()
