"""Many headless players (`mainevent.player.play`) in child processes, for e2e drills.

`PlayerSwarm` starts `processes` children (`python -m mainevent.testing.swarm CONFIG.json`), each
running its share of the players on its own asyncio loop, so hundreds of players neither starve
the test's loop nor share one GIL with it. Players join over `ramp_s`. Player `i` plays
`urls[i % len(urls)]` with the other URLs as fallbacks or, with `api=PlaybackApi(...)`, what the
playback API grants it, as a viewer does (`mainevent.player.grants`): a grant, its CDN with the
grant's fallbacks, a token refresh every `refresh_every_s`, the session ended at the end. Their
HTTP transport is `LeanTransport`, or httpx's own with `transport="httpx"` (`bench/
player_cost.py` compares the two). Each child prints one JSON line per player when it ends
(`{"index": i, "url": ..., "report": PlaybackReport.to_dict()}`; with the API also `"cdn"`,
`"calls"`: every `ApiCall.to_dict()`, and `"began"`/`"ended"`: epoch seconds of the grant request
and of the end of play; the report is None if no grant came), `{"started": n}` once all of its
players have been launched and `{"cpu_s": s}` at the end: the CPU its players took.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["PlaybackApi", "PlayerSwarm"]


@dataclass(frozen=True, slots=True)
class PlaybackApi:
    """Where swarm players get their grants."""

    url: str
    """Base URL of the playback API (e.g. a control fleet's load balancer)."""
    event: str
    viewers: Sequence[str]
    """Viewer JWTs (their accounts must be entitled): player `i` is `viewers[i % len(viewers)]`."""
    refresh_every_s: float = 8.0


class PlayerSwarm:
    """`players` headless players over `processes` child processes, playing `duration_s`."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        api: PlaybackApi | None = None,
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
        if bool(urls) == (api is not None):
            raise ValueError("give the players either urls or a playback api")
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
                "api": None if api is None else asdict(api) | {"viewers": list(api.viewers)},
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

    def _records(self, key: str) -> list[dict[str, Any]]:
        """The children's JSON lines whose first key is `key`, in order."""
        prefix = '{"' + key + '"'
        return [
            json.loads(line)
            for log in self._logs
            for line in log.read_text().splitlines()
            if line.startswith(prefix)
        ]

    def started(self) -> int:
        """Players launched so far (all children)."""
        return sum(int(r["started"]) for r in self._records("started"))

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        """Wait for every child to finish; one record per player (fewer if a child died)."""
        deadline = time.monotonic() + timeout_s
        for p in self._procs:
            p.wait(max(1.0, deadline - time.monotonic()))
        return self._records("index")

    def cpu_s(self) -> float:
        """CPU seconds the children spent running their players (imports and set-up excluded),
        summed over the children that finished."""
        return sum(float(r["cpu_s"]) for r in self._records("cpu_s"))

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
    from mainevent.player import PlayerConfig, grants, play
    from mainevent.player.grants import ApiCall
    from mainevent.player.transport import LeanTransport

    urls: list[str] = cfg["urls"]
    api: dict[str, Any] | None = cfg["api"]
    indices: list[int] = cfg["indices"]
    ramp = float(cfg["ramp_s"]) / max(1, int(cfg["players"]))
    duration_s = float(cfg["duration_s"])
    config = PlayerConfig(startup_timeout_s=float(cfg["startup_timeout_s"]))
    # Each player its own client, as each viewer is a device with its own connections: one
    # client shared by hundreds of players is one pool that httpcore scans on every request
    # (see `mainevent.sim.load.worker._Clients`), and the players, not the platform, starve.
    # `LeanTransport` (httptools) costs a third of httpx's own transport per request.
    tls = ssl.create_default_context()
    lean = cfg.get("transport", "lean") == "lean"

    def client(base_url: str = "") -> httpx.AsyncClient:
        transport = LeanTransport(verify=tls) if lean else httpx.AsyncHTTPTransport(verify=tls)
        return httpx.AsyncClient(
            base_url=base_url, timeout=10.0, trust_env=False, transport=transport
        )

    async def fixed(i: int) -> dict[str, Any]:
        k = i % len(urls)
        url, fallbacks = urls[k], [*urls[k + 1 :], *urls[:k]]
        async with client() as media:
            report = await play(
                url, duration_s=duration_s, client=media, fallback_urls=fallbacks, config=config
            )
        return {"index": i, "url": url, "report": report.to_dict()}

    async def granted(i: int, api: dict[str, Any]) -> dict[str, Any]:
        jwt = api["viewers"][i % len(api["viewers"])]
        calls: list[ApiCall] = []
        record: dict[str, Any] = {"index": i, "url": None, "cdn": None, "report": None}
        began = time.time()
        async with client(api["url"]) as control, client() as media:
            device = {"id": f"swarm-{i}", "type": "other"}
            grant = await grants.authorise(control, api["event"], device, jwt, calls.append)
            if grant is not None:
                report = await grants.play_granted(
                    control,
                    media,
                    jwt,
                    grant,
                    calls.append,
                    duration_s=duration_s,
                    refresh_every_s=float(api["refresh_every_s"]),
                    config=config,
                )
                ended = time.time()
                await grants.end(control, jwt, grant)
                record |= {
                    "began": began,
                    "ended": ended,
                    "url": grant["cdn"]["manifest_url"],
                    "cdn": grant["cdn"]["name"],
                    "report": report.to_dict(),
                }
        return record | {"calls": [c.to_dict() for c in calls]}

    async def one(i: int) -> None:
        await asyncio.sleep(i * ramp)
        record = await (fixed(i) if api is None else granted(i, api))
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
