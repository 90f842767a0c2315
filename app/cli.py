"""``stateful-rnn``: the command line. ``serve`` flags are generated from :class:`Settings`."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from typing import Sequence

from app.client.commands import add_commands
from app.client.commands import run as run_client_command
from app.config import Settings


def _serve_parser(subcommands: argparse._SubParsersAction) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the server. Every flag can also be set as SRNN_<FLAG> in the environment.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        choices = getattr(field.annotation, "__args__", None) if "Literal" in str(field.annotation) else None
        serve.add_argument(
            flag,
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else name.upper(),
            help=f"{field.description} (default: {default}; env SRNN_{name.upper()})",
        )


def serve(overrides: dict[str, str]) -> int:
    from pydantic import ValidationError

    from app.errors import StartupError

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"stateful-rnn: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    if settings.workers and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Set before prometheus_client is first imported: each process then writes its metrics
        # under it, and /metrics sums them.
        folder = tempfile.mkdtemp(prefix="srnn-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    from app.api.auth import KeyRing
    from app.main import load_initial, repository_of
    from app.model.loader import use_threads
    from app.serve import run

    try:
        KeyRing.from_settings(settings)  # a bad key list stops the start before the model loads
    except StartupError as exc:
        print(f"stateful-rnn: cannot start: {exc}", file=sys.stderr)
        return 2
    use_threads(settings.model_threads)
    try:
        repository = repository_of(settings)
        models = load_initial(settings, repository)
    except StartupError as exc:
        print(f"stateful-rnn: cannot serve model {str(settings.model_repository or settings.model)!r}: {exc}",
              file=sys.stderr)
        return 2
    try:
        return run(settings, models, repository)
    except StartupError as exc:
        print(f"stateful-rnn: cannot start: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stateful-rnn", description=__doc__.splitlines()[0])
    subcommands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(subcommands)
    add_commands(subcommands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        return serve(overrides)
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
