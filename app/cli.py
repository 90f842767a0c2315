"""The ``stateful-rnn`` command: ``serve``, whose flags are generated from :class:`Settings`, and
the client's ``stream`` and ``demo`` (:mod:`stateful_rnn_client.commands`)."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from app import __version__
from app.config import Settings
from stateful_rnn_client.commands import add_commands
from stateful_rnn_client.commands import run as run_client_command

PROG = "stateful-rnn"


def _serve_parser(subcommands: argparse._SubParsersAction) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the server. Every flag can also be set as SRNN_<FLAG> in the environment.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        choices = (
            getattr(field.annotation, "__args__", None)
            if "Literal" in str(field.annotation)
            else None
        )
        serve.add_argument(
            flag,
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else name.upper(),
            help=f"{field.description} (default: {default}; env SRNN_{name.upper()})",
        )


def serve(overrides: dict[str, str]) -> int:
    """Check everything that can be checked before TensorFlow loads (seconds), then serve."""
    import logging
    import logging.config

    from pydantic import ValidationError

    from app.config import describe_errors, unknown_variables
    from app.errors import StartupError
    from app.logs import log_config

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(f"{PROG}: bad setting {line}", file=sys.stderr)
        return 2
    # Configured now, so that every line from here on, warnings included, is in the chosen format.
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    logging.captureWarnings(True)  # Python's warnings, too, as log lines
    log = logging.getLogger("app")
    for line in unknown_variables(os.environ):
        log.warning("%s", line)
    if settings.log_level == "debug":  # TensorFlow's own C++ log too (app.model.framework)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    if settings.workers and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Set before prometheus_client is first imported: each process then writes its metrics
        # under it, and /metrics sums them.
        folder = tempfile.mkdtemp(prefix="srnn-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    from app.api.auth import KeyRing

    try:
        KeyRing.from_settings(settings)  # a bad key list stops the start before TensorFlow loads
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    from app.main import load_initial, repository_of
    from app.model.loader import use_threads
    from app.serve import run

    use_threads(settings.model_threads)
    try:
        repository = repository_of(settings)
        models = load_initial(settings, repository)
    except StartupError as exc:
        log.error(
            "cannot serve model %r: %s", str(settings.model_repository or settings.model), exc
        )
        return 2
    try:
        return run(settings, models, repository)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Real-time inference for recurrent Keras models that keeps each client stream's "
        "state: run the server, or stream a file through it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(subcommands)
    add_commands(subcommands)
    parser.set_defaults(prog=PROG)
    args = parser.parse_args(argv)
    if args.command == "serve":
        overrides = {
            k: v for k, v in vars(args).items() if k not in ("command", "prog") and v is not None
        }
        return serve(overrides)
    return run_client_command(args)


if __name__ == "__main__":
    sys.exit(main())
