"""Errors of the manifest package.

ManifestError                  anything this package refuses
├── PlaylistError              malformed playlist text (with its line number), or a
│                              playlist value the renderer will not write
└── WindowError                a RenditionWindow used against its rules (bad configuration,
                               out-of-order or oversized segment, publish after end)
"""

from __future__ import annotations


class ManifestError(Exception):
    """Base of the manifest package's errors."""


class PlaylistError(ManifestError):
    """A playlist is malformed or invalid; `line` is the 1-based line of the text, if any."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def __reduce__(self) -> tuple[type[PlaylistError], tuple[str, int | None]]:
        return (type(self), (self.reason, self.line))


class WindowError(ManifestError):
    """A live window was configured or fed against the rules of SPEC §1."""
