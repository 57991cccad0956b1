"""Errors of the CMAF packager.

```
CmafError             anything the packager refuses
├── MalformedBox      bytes that are not well-formed ISO BMFF (garbage, truncation, bad sizes)
├── UnsupportedMedia  well-formed, but not something we package (codec, track layout, timing)
└── ValidationError   samples we were asked to write or publish break a packaging rule
```

Messages say what was wrong and where (byte offsets, sample indexes, tick values) so an
operator can tell a corrupt encoder output from a misconfiguration.
"""

from __future__ import annotations

__all__ = ["CmafError", "MalformedBox", "UnsupportedMedia", "ValidationError"]


class CmafError(Exception):
    """Base class of every error raised by `mainevent.media.cmaf`."""


class MalformedBox(CmafError):
    """The input is not well-formed ISO BMFF: bad box sizes or types, truncated tables."""


class UnsupportedMedia(CmafError):
    """Well-formed media the packager does not handle (e.g. two tracks, an unknown codec)."""


class ValidationError(CmafError):
    """Samples or segments that break a packaging rule (e.g. non-contiguous timestamps)."""
