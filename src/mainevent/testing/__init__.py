"""Test and benchmark helpers that ship with the package (fakes, real-stack launchers)."""
