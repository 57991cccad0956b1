"""Subcommands of the `mainevent` CLI that orchestrate several components."""
