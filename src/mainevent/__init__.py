"""mainevent: an open-source platform for global live events."""

__version__ = "0.1.0"
