"""ABR core of the headless player: throughput estimate and rendition choice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainevent.player.abr import AbrConfig, AbrController, ThroughputEstimator, choose_level

LADDER = [400_000, 800_000, 1_600_000, 3_000_000]
CFG = AbrConfig()

ladders = st.lists(st.integers(50_000, 20_000_000), min_size=1, max_size=6).map(sorted)
estimates = st.floats(1_000, 100_000_000, allow_nan=False)
buffers = st.floats(0, 60, allow_nan=False)
segments = st.sampled_from([0.5, 1.0, 2.0, 4.0, 6.0])


def test_estimate_starts_at_default_until_first_download() -> None:
    """Before any segment is measured, the player assumes 500 kbit/s like hls.js."""
    est = ThroughputEstimator()
    assert not est.has_samples
    assert est.estimate_bps() == 500_000


def test_estimate_converges_to_constant_throughput() -> None:
    """Steady 4 Mbit/s downloads give a 4 Mbit/s estimate (zero-start bias corrected)."""
    est = ThroughputEstimator()
    est.sample(1.0, 500_000)
    assert est.estimate_bps() == pytest.approx(4_000_000)
    for _ in range(20):
        est.sample(1.0, 500_000)
    assert est.estimate_bps() == pytest.approx(4_000_000)


def test_estimate_follows_a_drop_quickly_and_a_rise_slowly() -> None:
    """min(fast, slow): a throughput drop shows at once, a recovery only gradually."""
    est = ThroughputEstimator()
    for _ in range(10):
        est.sample(1.0, 1_000_000)  # 8 Mbit/s
    est.sample(2.0, 250_000)  # 1 Mbit/s for 2 s
    dropped = est.estimate_bps()
    assert dropped < 6_500_000
    for _ in range(2):
        est.sample(1.0, 1_000_000)
    assert dropped < est.estimate_bps() < 8_000_000


def test_tiny_downloads_are_not_taken_as_huge_throughput() -> None:
    """A 2 ms cache hit counts as 50 ms (the estimate stays bounded)."""
    est = ThroughputEstimator()
    est.sample(0.002, 100_000)
    assert est.estimate_bps() == pytest.approx(100_000 * 8 / 0.05)


def test_start_level_fits_default_estimate() -> None:
    """At startup (500 kbit/s assumed) the player picks the rung that fits 70 % of it."""
    assert choose_level(LADDER, None, 500_000, 0, 2) == 0
    assert choose_level(LADDER, None, 3_000_000, 0, 2) == 2  # 3 M x 0.7 = 2.1 M


def test_switch_up_needs_more_headroom_than_staying() -> None:
    """Going up needs bitrate <= 0.7 x estimate; staying needs only <= 0.95 x estimate."""
    # 1.6 M / 0.95 = 1.68 M: the current 1.6 M rung is kept at 1.7 M...
    assert choose_level(LADDER, 2, 1_700_000, 0, 2) == 2
    # ...but from below, 1.7 M x 0.7 = 1.19 M does not reach 1.6 M.
    assert choose_level(LADDER, 1, 1_700_000, 0, 2) == 1


def test_switch_down_when_throughput_drops_and_buffer_is_low() -> None:
    """A throughput drop with little buffered moves down to a rung the link sustains."""
    assert choose_level(LADDER, 3, 1_000_000, 1.0, 2) == 1


def test_high_buffer_rides_out_a_dip() -> None:
    """With a deep buffer the current rung is kept if its next segment still arrives in time."""
    # 3 M at 2 Mbit/s: a 2 s segment takes 3 s; 8 s buffered leaves 5 s >= 1 segment.
    assert choose_level(LADDER, 3, 2_000_000, 8.0, 2) == 3
    # With 4 s buffered (below 2.5 segments) it switches down.
    assert choose_level(LADDER, 3, 2_000_000, 4.0, 2) < 3


def test_lowest_rung_when_nothing_fits() -> None:
    """Below the lowest rung's bitrate the player still plays the lowest rung."""
    assert choose_level(LADDER, 2, 100_000, 0.5, 2) == 0


def test_rejects_unsorted_ladders() -> None:
    """Bitrates must be ascending (the session sorts variants before asking)."""
    with pytest.raises(ValueError, match="ascending"):
        choose_level([800_000, 400_000], None, 1e6, 0, 2)


@given(ladder=ladders, current=st.integers(0, 5), estimate=estimates, buffer=buffers, seg=segments)
def test_never_above_estimate_unless_buffer_high(
    ladder: list[int], current: int, estimate: float, buffer: float, seg: float
) -> None:
    """The chosen rung fits the estimate x safety factor, is the lowest, or is kept on a high buffer."""
    current = min(current, len(ladder) - 1)
    level = choose_level(ladder, current, estimate, buffer, seg)
    if level > current:
        assert ladder[level] <= estimate * CFG.up_factor
    elif ladder[level] > estimate * CFG.down_factor and level != 0:
        assert level == current
        assert buffer >= CFG.high_buffer_segments * seg


@given(
    ladder=ladders,
    start=st.integers(0, 5),
    estimate=estimates,
    buffer_seq=st.lists(buffers, min_size=2, max_size=30),
    seg=segments,
)
def test_no_oscillation_on_constant_throughput(
    ladder: list[int], start: int, estimate: float, buffer_seq: list[float], seg: float
) -> None:
    """On a constant throughput, after the first decision the rung changes at most once, downwards."""
    level = min(start, len(ladder) - 1)
    chosen = []
    for buffer in buffer_seq:
        level = choose_level(ladder, level, estimate, buffer, seg)
        chosen.append(level)
    after_first = chosen[1:]
    changes = [(a, b) for a, b in zip(chosen, after_first, strict=False) if a != b]
    assert len(changes) <= 1
    assert all(b < a for a, b in changes)


@given(
    ladder=ladders,
    start=st.integers(0, 5),
    estimate=estimates,
    buffer=buffers,
    seg=segments,
)
def test_constant_conditions_settle_after_one_decision(
    ladder: list[int], start: int, estimate: float, buffer: float, seg: float
) -> None:
    """Same throughput and buffer every time: the second decision repeats the first."""
    first = choose_level(ladder, min(start, len(ladder) - 1), estimate, buffer, seg)
    assert choose_level(ladder, first, estimate, buffer, seg) == first


def test_controller_climbs_to_the_rung_the_link_sustains_and_stays() -> None:
    """Segments downloading at 5 Mbit/s lead to the 3 Mbit/s rung, then no more switches."""
    abr = AbrController(LADDER)
    levels = [abr.decide(0.0, 2.0)]
    for _ in range(30):
        nbytes = LADDER[levels[-1]] * 2 // 8  # one 2 s segment of the current rung
        abr.sample(nbytes * 8 / 5_000_000, nbytes)
        levels.append(abr.decide(4.0, 2.0))
    assert levels[0] == 0
    assert levels[-1] == 3  # 3 M <= 0.7 x 5 M
    assert levels == sorted(levels)  # only upward on the way there
    assert levels[-10:] == [3] * 10


def test_controller_rejects_empty_ladder() -> None:
    """A multivariant playlist without variants cannot be played."""
    with pytest.raises(ValueError, match="no renditions"):
        AbrController([])
