"""The PART-TARGET an LL-HLS playlist declares for a given cut (pure arithmetic)."""

from __future__ import annotations

import math
from fractions import Fraction

# The cutter places whole AAC frames (1024 samples at 48 kHz = 21.33 ms) into parts, so an
# audio part can overrun the cut by up to one frame: the declared PART-TARGET includes it.
AAC_FRAME_SAMPLES = 1024
AAC_SAMPLE_RATE = 48_000


def declared_part_target_us(part_target_ms: int, fps: int = 30) -> int:
    """PART-TARGET written in LL-HLS playlists: the longest part the cutter can produce.

    A part holds the whole samples that start inside its cut interval, so it is at most
    ⌈cut / sample⌉ samples long: 24 AAC frames = 512 ms for a 500 ms cut (video at 30 fps
    cuts exactly). The longest of audio and video, rounded up to 1 ms; it sets PART-HOLD-BACK
    (3 × PART-TARGET), which every LL-HLS player's latency is built on.
    """
    cut = Fraction(part_target_ms, 1000)
    aac = Fraction(AAC_FRAME_SAMPLES, AAC_SAMPLE_RATE)
    longest = max(math.ceil(cut / aac) * aac, Fraction(math.ceil(cut * fps), fps))
    return math.ceil(longest * 1000) * 1000
