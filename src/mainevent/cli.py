"""The `mainevent` command: one entry point, one subcommand per tool.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds its parser
and sets `func` (taking the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands; each has `register(subparsers) -> None`.
_COMMAND_MODULES = (
    "mainevent.commands.up",
    "mainevent.commands.feed",
    "mainevent.commands.origin",
    "mainevent.player.cli",
    "mainevent.control.cli",
    "mainevent.control.steering.cli",
    "mainevent.control.telemetry.cli",
    "mainevent.media.edge.cli",
    "mainevent.media.redundancy.cli",
    "mainevent.sim.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and the README check)."""
    parser = argparse.ArgumentParser(
        prog="mainevent",
        description="mainevent: live event streaming platform (ingest, transcode, package, deliver, play).",
    )
    parser.add_argument("--version", action="version", version="mainevent 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that part of the platform is not in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
