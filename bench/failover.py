"""Failover: time from feed loss to detection, and continuity across many forced failovers.

A real `mainevent up` with primary + backup pipelines, fed by two `mainevent feed` processes
(SRT, the same epoch-locked test pattern). Each round kills the feed of the *preferred*
pipeline at a different point inside a segment (as a dying venue encoder would), measures

- detection: kill → `/healthz` reports that pipeline `lost`;
- switch:    kill → the selector prefers the other pipeline;

then restarts the killed feed and waits until it is healthy again (so the next round can kill
the other one). Throughout, recorders poll the video and audio media playlists and check
continuity: MSNs never listed, EXT-X-GAP entries, discontinuities, segments whose bytes changed.
A last phase cuts both feeds for `--outage` seconds: the slate (or EXT-X-GAP, `--loss gap`)
keeps the window moving, and the time until live media returns is measured.

    .venv/bin/python bench/failover.py [--rounds 20] [--outage 10] [--loss slate|gap]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from latency import histogram_quantiles  # bench/latency.py, beside this script
from mainevent.testing import probes
from mainevent.testing.continuity import ContinuityReport, PlaylistRecorder
from mainevent.testing.feeds import Feed
from mainevent.testing.stack import RunningStack, start_stack

D = 2.0


def wait_until(cond: Callable[[], object], timeout: float) -> float:
    return probes.wait_until(cond, timeout, every_s=0.02)


def verdict(stack: RunningStack, name: str) -> str:
    return str(stack.pipeline_by_name(name)["verdict"])


def healthy(stack: RunningStack, name: str) -> bool:
    return bool(stack.redundancy()["pipelines"][name]["healthy"])


def quantiles(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"p50 {statistics.median(xs):.2f} s, p95 {p95:.2f} s, max {xs[-1]:.2f} s (n={len(xs)})"


def describe(name: str, rep: ContinuityReport) -> str:
    return (
        f"{name}: {len(rep.media)} media segments listed, missing MSNs {len(rep.missing)}, "
        f"gaps {len(rep.gaps)}, discontinuities {len(rep.discontinuities)}, "
        f"changed content {len(rep.changed)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--outage", type=float, default=10.0, help="0 skips the total-loss phase")
    ap.add_argument("--hold", type=float, default=600.0, help="failback hold (s)")
    ap.add_argument("--log", help="write the platform's log to this file")
    ap.add_argument(
        "--loss", choices=("slate", "gap"), default="slate", help="redundancy.on_total_loss"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(
            Path(tmp) / "data",
            extra_args=("--no-feed", "--no-edges"),
            env={
                "MAINEVENT_REDUNDANCY__BACKUP": "true",
                "MAINEVENT_REDUNDANCY__FAILBACK_HOLD_S": str(args.hold),
                "MAINEVENT_REDUNDANCY__ON_TOTAL_LOSS": args.loss,
            },
            wait_ready=False,
        )
        assert stack.backup_ingest_url is not None
        feeds = {"primary": Feed(stack.ingest_url), "backup": Feed(stack.backup_ingest_url)}
        try:
            for f in feeds.values():
                f.start()
            stack.wait_ready(60)
            wait_until(lambda: all(healthy(stack, n) for n in feeds), 30)
            stack.wait_window(4)
            base = f"{stack.base_url}/live/{stack.event}"
            detection: list[float] = []
            switch: list[float] = []
            with (
                PlaylistRecorder(f"{base}/v360/index.m3u8") as video,
                PlaylistRecorder(f"{base}/a128/index.m3u8") as audio,
            ):
                for i in range(args.rounds):
                    victim = str(stack.redundancy()["preferred"])
                    other = "backup" if victim == "primary" else "primary"
                    wait_until(partial(healthy, stack, other), 30)
                    # Cut at a different point of the segment each round.
                    at = 0.1 + (i * 0.37) % (D - 0.2)
                    time.sleep((at - time.time() % D) % D)
                    t0 = time.monotonic()
                    feeds[victim].kill()
                    t_lost = t_switch = None
                    while t_lost is None or t_switch is None:
                        now = time.monotonic() - t0
                        if now > 15:
                            raise TimeoutError(f"round {i}: no detection/switch in 15 s")
                        if t_lost is None and verdict(stack, victim) == "lost":
                            t_lost = time.monotonic() - t0
                        if t_switch is None and stack.redundancy()["preferred"] == other:
                            t_switch = time.monotonic() - t0
                        time.sleep(0.02)
                    detection.append(t_lost)
                    switch.append(t_switch)
                    print(
                        f"round {i + 1:2d}: cut {victim} at {at:.2f} s into a segment: "
                        f"lost after {t_lost:.2f} s, switched after {t_switch:.2f} s",
                        flush=True,
                    )
                    feeds[victim].start()
                    wait_until(partial(healthy, stack, victim), 60)
                time.sleep(2 * D)
                v_rep, a_rep = video.report(), audio.report()

            print()
            print(f"failover rounds: {args.rounds} (segment duration {D:g} s)")
            print(f"detection (kill → health 'lost'): {quantiles(detection)}")
            print(f"switch (kill → other pipeline preferred): {quantiles(switch)}")
            print(describe("continuity v360", v_rep))
            print(describe("continuity a128", a_rep))

            if args.outage > 0:
                with PlaylistRecorder(f"{base}/v360/index.m3u8") as total:
                    time.sleep(2)
                    cut = time.time()
                    for f in feeds.values():
                        f.kill()
                    time.sleep(args.outage)
                    back = time.time()
                    for f in feeds.values():
                        f.start()
                    wait_until(lambda: stack.pipeline_by_name("primary")["feed"]["connected"], 30)
                    connected = time.time()
                    # Live media is back: after the slate, the segment after a discontinuity;
                    # in gap mode, any media segment.
                    wait_until(
                        lambda: any(
                            e.first_seen > back
                            and (e.discontinuity if args.loss == "slate" else not e.gap)
                            for e in total.listed.values()
                        ),
                        60,
                    )
                    time.sleep(D)
                rep = total.report()
                if rep.errors:
                    print(f"recorder errors ({len(rep.errors)}): {rep.errors[:3]}")
                if args.loss == "slate":
                    first = rep.discontinuities[-1]  # live media after the slate run
                    covered = f"{first - rep.discontinuities[0]} slate segments"
                else:
                    first = min(m for m in rep.media if rep.listed[m].first_seen > back)
                    covered = f"{len(rep.gaps)} MSNs listed as EXT-X-GAP"
                print(
                    f"total loss {args.outage:g} s ({args.loss}): {covered}, "
                    f"missing {len(rep.missing)}, longest playlist freeze "
                    f"{rep.longest_freeze_s(cut, back):.2f} s; "
                    f"feeds restarted → primary connected {connected - back:.2f} s; first live "
                    f"segment after the return starts {first * D - connected:+.2f} s after the "
                    f"feed reconnected (capture time) and was listed "
                    f"{rep.listed[first].first_seen - connected:.2f} s after it"
                )
                m = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
                delays = histogram_quantiles(m, (0.5, 0.95, 0.99))
                print(
                    "publish delay (segment capture end → listed), whole run: "
                    + ", ".join(
                        f"p{round(q * 100)} ≤ {v:g} s"
                        for q, v in zip((0.5, 0.95, 0.99), delays, strict=True)
                        if v is not None
                    )
                )
                alarms = [
                    ln
                    for ln in m.splitlines()
                    if ln.startswith("mainevent_manifest_stall_alarms_total{")
                ]
                print("stall alarms: " + "; ".join(alarms))
        finally:
            for f in feeds.values():
                f.kill()
            stack.stop()
            if args.log:
                Path(args.log).write_text("\n".join(stack.log) + "\n")


if __name__ == "__main__":
    main()
