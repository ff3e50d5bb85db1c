"""`forgeflow models list | show | register | alias | rm`: the model registry from the command line."""

from __future__ import annotations

import typer

from cli.main import app

models_app = typer.Typer(help="The model registry: versions, aliases, stats.", no_args_is_help=True)
app.add_typer(models_app, name="models")
