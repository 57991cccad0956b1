"""`mainevent load` arguments (the work is in `mainevent.sim.load.run`)."""

from __future__ import annotations

import argparse


def register_load(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Placeholder until the load generator lands."""
