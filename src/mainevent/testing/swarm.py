"""Many headless players (`mainevent.player.play`) in child processes, for e2e drills.

`PlayerSwarm` starts `processes` children (`python -m mainevent.testing.swarm CONFIG.json`), each
running its share of the players on its own asyncio loop, so hundreds of players neither starve
the test's loop nor share one GIL with it. Player `i` plays `urls[i % len(urls)]` with the other
URLs as fallbacks; players join over `ramp_s`. Their HTTP transport is `LeanTransport`, or httpx's
own with `transport="httpx"` (`bench/player_cost.py` compares the two). Each child prints one JSON line per player when it
ends (`{"index": i, "url": ..., "report": PlaybackReport.to_dict()}`), `{"started": n}` once
all of its players have been launched and `{"cpu_s": s}` at the end: the CPU its players took.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["PlayerSwarm"]


class PlayerSwarm:
    """`players` headless players over `processes` child processes, playing `duration_s`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        players: int,
        duration_s: float,
        workdir: Path,
        processes: int = 2,
        ramp_s: float = 10.0,
        startup_timeout_s: float = 30.0,
        transport: str = "lean",
    ) -> None:
        if transport not in ("lean", "httpx"):
            raise ValueError(f"transport must be 'lean' or 'httpx', not {transport!r}")
        workdir.mkdir(parents=True, exist_ok=True)
        self.players = players
        self._procs: list[subprocess.Popen[str]] = []
        self._logs: list[Path] = []
        for k in range(processes):
            cfg = {
                "urls": list(urls),
                "indices": list(range(k, players, processes)),
                "players": players,
                "duration_s": duration_s,
                "ramp_s": ramp_s,
                "startup_timeout_s": startup_timeout_s,
                "transport": transport,
            }
            path = workdir / f"swarm-{k}.json"
            path.write_text(json.dumps(cfg))
            out = workdir / f"swarm-{k}.out"
            self._logs.append(out)
            with out.open("w") as sink, (workdir / f"swarm-{k}.err").open("w") as err:
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mainevent.testing.swarm", str(path)],
                        stdout=sink,
                        stderr=err,
                        text=True,
                    )
                )

    def started(self) -> int:
        """Players launched so far (all children)."""
        n = 0
        for log in self._logs:
            for line in log.read_text().splitlines():
                if line.startswith('{"started"'):
                    n += int(json.loads(line)["started"])
        return n

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        """Wait for every child to finish; one record per player (fewer if a child died)."""
        deadline = time.monotonic() + timeout_s
        for p in self._procs:
            p.wait(max(1.0, deadline - time.monotonic()))
        out: list[dict[str, Any]] = []
        for log in self._logs:
            for line in log.read_text().splitlines():
                if line.startswith('{"index"'):
                    out.append(json.loads(line))
        return out

    def cpu_s(self) -> float:
        """CPU seconds the children spent running their players (imports and set-up excluded),
        summed over the children that finished."""
        total = 0.0
        for log in self._logs:
            for line in log.read_text().splitlines():
                if line.startswith('{"cpu_s"'):
                    total += float(json.loads(line)["cpu_s"])
        return total

    def returncodes(self) -> list[int | None]:
        return [p.poll() for p in self._procs]

    def close(self) -> None:
        """Stop the children that are still running."""
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _run(cfg: dict[str, Any]) -> None:
    from mainevent.player import PlayerConfig, play
    from mainevent.player.transport import LeanTransport

    urls: list[str] = cfg["urls"]
    indices: list[int] = cfg["indices"]
    ramp = float(cfg["ramp_s"]) / max(1, int(cfg["players"]))
    # Each player its own client, as each viewer is a device with its own connections: one
    # client shared by hundreds of players is one pool that httpcore scans on every request
    # (see `mainevent.sim.load.worker._Clients`), and the players, not the platform, starve.
    # `LeanTransport` (httptools) costs a third of httpx's own transport per request.
    tls = ssl.create_default_context()

    async def one(i: int) -> None:
        await asyncio.sleep(i * ramp)
        k = i % len(urls)
        url, fallbacks = urls[k], [*urls[k + 1 :], *urls[:k]]
        lean = cfg.get("transport", "lean") == "lean"
        transport = LeanTransport(verify=tls) if lean else httpx.AsyncHTTPTransport(verify=tls)
        async with httpx.AsyncClient(timeout=10.0, trust_env=False, transport=transport) as client:
            report = await play(
                url,
                duration_s=float(cfg["duration_s"]),
                client=client,
                fallback_urls=fallbacks,
                config=PlayerConfig(startup_timeout_s=float(cfg["startup_timeout_s"])),
            )
        record = {"index": i, "url": url, "report": report.to_dict()}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    cpu0 = time.process_time()
    async with asyncio.TaskGroup() as tg:
        for i in indices:
            tg.create_task(one(i))
        await asyncio.sleep(float(cfg["ramp_s"]))
        sys.stdout.write(json.dumps({"started": len(indices)}) + "\n")
        sys.stdout.flush()
    sys.stdout.write(json.dumps({"cpu_s": time.process_time() - cpu0}) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = json.loads(Path(args[0]).read_text())
    try:
        import uvloop

        uvloop.run(_run(cfg))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_run(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
