"""Standard-mode playlist freshness: cached copies expire before the next segment is listed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mainevent.media.origin.live import playlist_max_age

D_MS = 2000


@given(
    last_msn=st.integers(0, 10**9),
    after_ms=st.integers(-D_MS, 2 * D_MS),
    d_ms=st.sampled_from([1000, 2000, 4000, 6000]),
)
def test_copy_never_outlives_the_next_listing(last_msn: int, after_ms: int, d_ms: int) -> None:
    """Whatever the time, a copy cached for max-age expires by the time segment last + 1 can
    be listed (its capture end), unless the stream already runs late."""
    half_td = max(1, d_ms // 2000)
    end_ms = (last_msn + 1) * d_ms  # capture end of the newest listed segment
    now_ms = end_ms + after_ms
    age = playlist_max_age(
        last_msn=last_msn, segment_duration_ms=d_ms, now_ms=now_ms, half_td_s=half_td
    )
    assert 0 <= age <= half_td
    next_listing_ms = end_ms + d_ms
    if now_ms <= next_listing_ms + d_ms:
        assert now_ms + age * 1000 <= next_listing_ms or age == 0


def test_a_late_stream_is_still_cached() -> None:
    """More than a segment overdue (an event falling behind), playlists keep TD/2: a stalled
    event is not fetched through the caches on every player request."""
    age = playlist_max_age(
        last_msn=10, segment_duration_ms=D_MS, now_ms=12 * D_MS + D_MS + 1, half_td_s=1
    )
    assert age == 1
