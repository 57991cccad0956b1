"""CPU a headless player costs the load generator: httpx's own transport against `LeanTransport`.

`mainevent load` and the e2e swarms run hundreds to thousands of real headless players
(`mainevent.player.play`) per process; what one costs per second of playback decides how many
this machine can drive before the players, not the platform, are what a run measures. The bench
starts `mainevent up` (test ladder, edges), then plays `--players` players for `--seconds`
through edge cdn-a in one child process (`mainevent.testing.swarm`, one client per player as
the load generator has), alternating the two transports `--rounds` times. Each run prints the
child's CPU for its players (`time.process_time`, imports excluded) per player-second of
playback and per request, and the players' start-up p50 and stalls; the summary prints lean /
httpx per round (same process, same stack, minutes apart: a ratio, not an absolute figure, is
what survives a shared machine).

    .venv/bin/python bench/player_cost.py [--players 100] [--seconds 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mainevent.testing.stack import start_stack
from mainevent.testing.swarm import PlayerSwarm


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_once(url: str, transport: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    swarm = PlayerSwarm(
        [url],
        players=args.players,
        duration_s=args.seconds,
        workdir=work,
        processes=1,
        ramp_s=args.ramp,
        transport=transport,
    )
    try:
        records = swarm.wait(args.seconds + args.ramp + 120)
        cpu = swarm.cpu_s()
    finally:
        swarm.close()
    reports = [r["report"] for r in records]
    played = sum(r["played_s"] for r in reports)
    requests = sum(r["segments_fetched"] + r["playlists_fetched"] for r in reports)
    startups = [r["startup_s"] for r in reports if r["startup_s"] is not None]
    out = {
        "players": float(len(records)),
        "cpu_s": cpu,
        "ms_per_player_s": 1000 * cpu / max(played, 1e-9),
        "us_per_request": 1e6 * cpu / max(requests, 1),
        "requests_per_player_s": requests / max(played, 1e-9),
        "startup_p50_s": statistics.median(startups) if startups else float("nan"),
        "stalls": float(sum(r["stalls"] for r in reports)),
        "fatal": float(sum(1 for r in reports if r["fatal"] is not None)),
    }
    print(
        f"  {transport:5s}: {out['ms_per_player_s']:.3f} ms CPU per player-second, "
        f"{out['us_per_request']:.0f} µs per request ({out['requests_per_player_s']:.2f} "
        f"requests per player-second), {len(records)} players, start-up p50 "
        f"{out['startup_p50_s']:.3f} s, {out['stalls']:.0f} stalls, {out['fatal']:.0f} fatal; "
        f"load {_loadavg()}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--players", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"player cost, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.players} players × "
        f"{args.seconds:.0f} s through edge cdn-a, one process; load {_loadavg()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="player-cost-") as tmp:
        stack = start_stack(Path(tmp) / "stack")
        try:
            stack.wait_window(3, timeout=60)
            url = stack.edge_master_url("cdn-a")
            ratios = []
            for k in range(args.rounds):
                print(f"round {k + 1}:", flush=True)
                httpx_run = run_once(url, "httpx", args, Path(tmp) / f"httpx-{k}")
                lean_run = run_once(url, "lean", args, Path(tmp) / f"lean-{k}")
                ratios.append(lean_run["ms_per_player_s"] / httpx_run["ms_per_player_s"])
        finally:
            stack.stop()
    print(
        "lean / httpx CPU per player-second, per round: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; load {_loadavg()}"
    )


if __name__ == "__main__":
    main()
