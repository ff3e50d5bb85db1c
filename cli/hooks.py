"""`forgeflow hooks install | uninstall | status`: git hooks that ask the running API to retrain.

post-commit and post-merge notify `POST /v1/retrain` in the background; for a bare server
repository, `install` prints a post-receive hook instead (or on `--print-post-receive`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import err, out, run
from core.paths import display
from core.settings import get_settings

hooks_app = typer.Typer(
    help="Git hooks that ask the running API (POST /v1/retrain) to retrain after commits and merges.",
    no_args_is_help=True,
)
HookRepoOpt = Annotated[str, typer.Option("--repo", help="the local repository (its top-level directory)")]
ServerOpt = Annotated[
    str | None, typer.Option("--server", help="the forgeflow API (default: http://serve.host:serve.port)")
]


@hooks_app.command("install")
def install(
    repo: HookRepoOpt = ".",
    server: ServerOpt = None,
    print_post_receive: Annotated[
        bool, typer.Option("--print-post-receive", help="print a post-receive hook instead; install nothing")
    ] = False,
) -> None:
    """Install post-commit and post-merge hooks (a bare repository: print a post-receive hook)."""
    from core.repos.hooks import install as install_hooks
    from core.repos.hooks import locate_repo, render_post_receive, server_url

    def body() -> None:
        settings = get_settings()
        target = locate_repo(repo, settings)
        url = server_url(server, settings)
        if print_post_receive or target.bare:
            _say(render_post_receive(url, sys.executable), end="")
            if target.bare and not print_post_receive:
                err.print(
                    "a bare repository runs no post-commit: save the hook above as hooks/post-receive "
                    "(executable); nothing was installed",
                    highlight=False,
                )
            return
        for change in install_hooks(target.hooks_dir, url, sys.executable):
            _say(f"{change.hook}: {change.action} ({_where(change.path, target.top)})")
        _say(f"notifies {url}/v1/retrain")

    run(body)


@hooks_app.command("uninstall")
def uninstall(repo: HookRepoOpt = ".") -> None:
    """Remove forgeflow's block from the hooks; other hook content stays."""
    from core.repos.hooks import locate_repo
    from core.repos.hooks import uninstall as uninstall_hooks

    def body() -> None:
        target = locate_repo(repo, get_settings())
        for change in uninstall_hooks(target.hooks_dir):
            _say(f"{change.hook}: {change.action} ({_where(change.path, target.top)})")

    run(body)


@hooks_app.command("status")
def status(repo: HookRepoOpt = ".") -> None:
    """Show which hooks hold forgeflow's block and the API they notify."""
    from core.repos.hooks import hook_states, locate_repo

    def body() -> None:
        target = locate_repo(repo, get_settings())
        for state in hook_states(target.hooks_dir):
            what = {"ours": "installed", "ours+user": "installed (in your hook)", "user": "not installed"}
            line = f"{state.hook}: {what.get(state.state, 'not installed (no hook)')}"
            line += f", notifies {state.server}" if state.server else ""
            _say(f"{line} ({_where(state.path, target.top)})")

    run(body)


def _say(text: str, end: str = "\n") -> None:
    """Print as is: no markup, no highlighting, no wrapping (a printed hook must stay valid shell)."""
    out.print(text, end=end, markup=False, highlight=False, soft_wrap=True)


def _where(path: Path, top: Path) -> str:
    """The hook file relative to where the user stands, else to the repository (else its name)."""
    try:
        fallback = str(path.relative_to(top))
    except ValueError:
        fallback = f"{path.parent.name}/{path.name}"
    return display(path, fallback=fallback)
