"""The ``stateful-rnn-client`` command: ``stream`` and ``demo`` (:mod:`stateful_rnn_client.commands`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stateful_rnn_client import __version__
from stateful_rnn_client.commands import add_commands, run

PROG = "stateful-rnn-client"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stream files through sessions of a stateful-rnn server, or replay the seed notebook.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    add_commands(subcommands)
    parser.set_defaults(prog=PROG)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
