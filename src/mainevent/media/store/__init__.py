"""Segment store: recent media in memory, everything on disk, behind a protocol.

`SegmentStore` is the plugin point (object storage later); `LocalSegmentStore` is the embedded
implementation.
"""

from mainevent.media.store.local import LocalSegmentStore
from mainevent.media.store.protocol import SegmentRecord, SegmentStore, StoreError

__all__ = ["LocalSegmentStore", "SegmentRecord", "SegmentStore", "StoreError"]
