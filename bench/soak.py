"""Soak: `mainevent up` on its default settings for a long time, with real players and CPU bursts.

Starts the platform as `make demo` does (default ladder, preset, feed and backup pipeline),
then, for `--minutes`:

- plays it with a headless `mainevent play` process and with hls.js in Debian Chromium (both
  through edge `cdn-a`, as viewers would);
- every `--burst-every` seconds loads every core for `--burst` seconds (busy-loop processes at
  normal priority), on top of whatever else runs on the machine;
- every `--sample-every` seconds scrapes the origin's metrics and reads the RSS and open file
  descriptors of every process of the stack (the `mainevent up` process and its descendants).

Reports slate and EXT-X-GAP segments, late listings, manifest stall alarms, pipeline switches
(failovers), player stalls, and memory / file-descriptor growth per hour (least-squares slope
after the warm-up), with the load average over the run. Goal: 0 slate segments and 0 stalls
with both feeds healthy, memory flat.

    nice -n -10 .venv/bin/python bench/soak.py [--minutes 30] [--burst-every 120 --burst 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mainevent.testing import probes
from mainevent.testing.browser import player_page
from mainevent.testing.continuity import PlaylistRecorder
from mainevent.testing.stack import RunningStack, alive, descendants, start_stack

COUNTERS = {
    "slate": "mainevent_slate_segments_total",
    "gap": "mainevent_gap_segments_total",
    "late": "mainevent_late_segments_total",
    "stall_alarms": "mainevent_manifest_stall_alarms_total",
    "switches": "mainevent_pipeline_switches_total",
    "discarded_after_loss": "mainevent_discarded_after_loss_total",
    "rejected": "mainevent_segments_rejected_total",
    "published": "mainevent_segments_published_total",
}


@dataclass
class Sample:
    t: float  # seconds since the soak started
    load1: float
    rss_kb: dict[str, int]  # "comm pid" -> VmRSS
    fds: dict[str, int]
    counters: dict[str, float]
    verdicts: dict[str, str] = field(default_factory=dict)  # pipeline -> "verdict: reason"


@dataclass
class Bursts:
    every_s: float
    length_s: float
    stop: threading.Event
    count: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self) -> None:
        """Every `every_s`, one busy-loop process per core for `length_s` (then ended by pid)."""
        while not self.stop.wait(self.every_s):
            self.count += 1
            self.procs = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 2)
            ]
            self.stop.wait(self.length_s)
            self.end()

    def end(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


def proc_table(root: int) -> tuple[dict[str, int], dict[str, int]]:
    """(RSS kB, open fds) of `root` and every descendant, keyed "comm pid"."""
    rss: dict[str, int] = {}
    fds: dict[str, int] = {}
    for pid in {root, *descendants(root)}:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/status").read_text()
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue  # exited meanwhile
        kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
        rss[f"{comm} {pid}"] = kb
        fds[f"{comm} {pid}"] = n
    return rss, fds


def scrape(stack: RunningStack) -> dict[str, float]:
    text = httpx.get(f"{stack.base_url}/metrics", timeout=10).text
    return {k: probes.metric(text, name) for k, name in COUNTERS.items()}


def verdicts(stack: RunningStack) -> dict[str, str]:
    """Each pipeline's feed verdict and reason, digits blurred so reasons can be counted."""
    out = {}
    for p in stack.health()["pipelines"]:
        reason = re.sub(r"[0-9]+(\.[0-9]+)?", "N", str(p["reason"]))
        out[str(p["pipeline"])] = f"{p['verdict']}: {reason}"
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return 0.0
    mx = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(v for _, v in points)
    den = sum((t - mx) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / den * 3600


def by_comm(table: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, v in table.items():
        comm = key.rsplit(" ", 1)[0]
        out[comm] = out.get(comm, 0) + v
    return out


def browser_player(url: str, profile: Path, stop: threading.Event, out: dict[str, Any]) -> None:
    """hls.js in Chromium until `stop`; stats every 5 s into `out`."""
    samples: list[dict[str, Any]] = []
    out["samples"] = samples
    try:
        with player_page(url, profile, start_timeout_s=90) as page:
            out["started"] = time.monotonic()
            while not stop.wait(5.0):
                samples.append(page.evaluate("window.mainevent.stats()"))
            samples.append(page.evaluate("window.mainevent.stats()"))
    except Exception as exc:  # reported, not raised: the soak goes on
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]


def verdict_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Per pipeline: how many samples had each verdict/reason (the 5 most common)."""
    counts: dict[str, dict[str, int]] = {}
    for s in samples:
        for name, v in s.verdicts.items():
            c = counts.setdefault(name, {})
            c[v] = c.get(v, 0) + 1
    return {n: dict(sorted(c.items(), key=lambda kv: -kv[1])[:5]) for n, c in counts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    ap.add_argument("--burst-every", type=float, default=120.0, help="seconds between bursts")
    ap.add_argument("--burst", type=float, default=20.0, help="seconds each burst lasts")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds left out of slopes")
    ap.add_argument("--log", type=Path, help="write the platform's log to this file")
    ap.add_argument("--json", type=Path, help="write the figures as JSON to this file")
    args = ap.parse_args()
    if args.minutes <= 0 or args.burst < 0 or args.burst_every <= 0 or args.sample_every <= 0:
        ap.error("--minutes, --burst-every and --sample-every must be > 0, --burst ≥ 0")
    seconds = args.minutes * 60

    with tempfile.TemporaryDirectory() as tmp:
        log_path = args.log or Path(tmp) / "stack.log"
        stack = start_stack(Path(tmp) / "data", defaults=True, timeout=180, log_path=log_path)
        stop = threading.Event()
        bursts = Bursts(args.burst_every, args.burst, stop)
        threads: list[threading.Thread] = []
        headless: subprocess.Popen[str] | None = None
        try:
            stack.wait_window(segments=3, timeout=120)
            edge = stack.edge_master_url("cdn-a") if stack.edges else stack.master_url
            health = stack.redundancy()
            print(
                f"stack up: {stack.base_url}, playing {edge}; pipelines "
                + ", ".join(f"{n} healthy={p['healthy']}" for n, p in health["pipelines"].items()),
                flush=True,
            )
            headless = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mainevent.cli",
                    "play",
                    edge,
                    "--duration",
                    f"{seconds:.0f}",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            browser: dict[str, Any] = {}
            master = httpx.get(stack.master_url, timeout=10).text
            video = next(ln for ln in master.splitlines() if ln and not ln.startswith("#"))
            recorder = PlaylistRecorder(
                f"{stack.master_url.rsplit('/', 1)[0]}/{video}", every_s=0.5
            )
            threads = [
                threading.Thread(
                    target=browser_player,
                    args=(f"{stack.base_url}/player/?src={edge}", Path(tmp) / "profile", stop),
                    kwargs={"out": browser},
                    daemon=True,
                ),
                threading.Thread(target=bursts.run, daemon=True),
            ]
            for t in threads:
                t.start()
            recorder.__enter__()
            t0 = time.monotonic()
            samples: list[Sample] = []
            while (now := time.monotonic() - t0) < seconds and stack.proc.poll() is None:
                rss, fds = proc_table(stack.proc.pid)
                try:
                    counters, health_now = scrape(stack), verdicts(stack)
                except httpx.HTTPError as exc:  # a slow answer under load: note it, go on
                    print(f"[{now / 60:5.1f} min] scrape failed: {exc!r}", flush=True)
                    time.sleep(args.sample_every)
                    continue
                samples.append(Sample(now, os.getloadavg()[0], rss, fds, counters, health_now))
                if len(samples) % max(1, round(300 / args.sample_every)) == 1:
                    c = samples[-1].counters
                    print(
                        f"[{now / 60:5.1f} min] load {samples[-1].load1:.2f} "
                        f"rss {sum(rss.values()) / 1024:.0f} MB fds {sum(fds.values())} "
                        f"slate {c['slate']:.0f} gap {c['gap']:.0f} late {c['late']:.0f} "
                        f"switches {c['switches']:.0f} bursts {bursts.count}",
                        flush=True,
                    )
                time.sleep(max(0.0, args.sample_every - (time.monotonic() - t0 - now)))
            stack_alive = stack.proc.poll() is None
            if stack_alive:
                rss, fds = proc_table(stack.proc.pid)
                samples.append(
                    Sample(time.monotonic() - t0, os.getloadavg()[0], rss, fds, scrape(stack))
                )
            pipelines = stack.redundancy()["pipelines"] if stack_alive else {}
        finally:
            stop.set()
            bursts.end()
            for t in threads:
                t.join(60)
            report_text = ""
            if headless is not None:
                try:
                    report_text, _ = headless.communicate(timeout=90)
                except subprocess.TimeoutExpired:
                    headless.kill()
                    report_text, _ = headless.communicate()
            with contextlib.suppress(NameError):
                cont = recorder.stop()
            left = stack.stop()
            for pid in left:
                if alive(pid):
                    print(f"warning: stack process {pid} outlived the stack", flush=True)
        figures = summarise(
            args, samples, bursts.count, report_text, browser, cont, pipelines, log_path
        )
        print(json.dumps(figures, indent=2, sort_keys=True))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, sort_keys=True))
    return 0


def summarise(
    args: argparse.Namespace,
    samples: list[Sample],
    bursts: int,
    headless_json: str,
    browser: dict[str, Any],
    cont: Any,
    pipelines: dict[str, Any],
    log_path: Path,
) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    warm = [s for s in samples if s.t >= min(args.warmup, last.t / 4)]
    total_rss = [(s.t, sum(s.rss_kb.values()) / 1024) for s in warm]
    total_fds = [(s.t, float(sum(s.fds.values()))) for s in warm]
    delta = {k: last.counters[k] - first.counters[k] for k in COUNTERS}
    loads = [s.load1 for s in samples]
    try:
        headless = json.loads(headless_json.strip().splitlines()[-1])
    except (ValueError, IndexError):
        headless = {"error": "no report", "raw": headless_json[-500:]}
    bs = browser.get("samples") or []
    b_first, b_last = (bs[0], bs[-1]) if bs else ({}, {})
    lat = [s["latencySec"] for s in bs if s.get("latencySec") is not None]
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    return {
        "minutes": round(last.t / 60, 2),
        "cpu_bursts": {"count": bursts, "every_s": args.burst_every, "length_s": args.burst},
        "load1": {
            "min": round(min(loads), 2),
            "mean": round(statistics.fmean(loads), 2),
            "max": round(max(loads), 2),
        },
        "segments": {k: round(v) for k, v in delta.items()},
        "playlist": {
            "media": len(cont.media),
            "missing": len(cont.missing),
            "gaps": len(cont.gaps),
            "discontinuities": len(cont.discontinuities),
            "changed": len(cont.changed),
        },
        "log_lines": {
            "failover": log.count("(failover:"),
            "failback": log.count("(failback:"),
            "listing_late": log.count("listing late:"),
            "into_slate_or_gap": log.count(": into slate") + log.count(": into EXT-X-GAP"),
            "manifest_stall": log.count("manifest stall:"),
            "transcoder_restart": log.count("; restarting"),
        },
        "pipelines_at_end": {n: p.get("healthy") for n, p in pipelines.items()},
        "feed_verdicts": verdict_counts(samples),
        "headless_player": {
            k: headless.get(k)
            for k in ("stalls", "stall_time_s", "startup_s", "played_s", "latency", "fatal")
        }
        | ({"error": headless["error"]} if "error" in headless else {}),
        "browser_hlsjs": {
            "stalls": (b_last.get("stalls") or 0) - (b_first.get("stalls") or 0),
            "stall_time_s": round(
                (b_last.get("stallTimeSec") or 0) - (b_first.get("stallTimeSec") or 0), 3
            ),
            "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
            "latency_max_s": round(max(lat), 2) if lat else None,
            "samples": len(bs),
            "errors": len(b_last.get("errors") or []),
        }
        | ({"error": browser["error"]} if "error" in browser else {}),
        "memory": {
            "rss_mb_start": round(sum(first.rss_kb.values()) / 1024, 1),
            "rss_mb_end": round(sum(last.rss_kb.values()) / 1024, 1),
            "rss_mb_per_hour": round(slope_per_hour(total_rss), 1),
            "by_process_mb_start": {
                k: round(v / 1024, 1) for k, v in sorted(by_comm(first.rss_kb).items())
            },
            "by_process_mb_end": {
                k: round(v / 1024, 1) for k, v in sorted(by_comm(last.rss_kb).items())
            },
            "processes_start": len(first.rss_kb),
            "processes_end": len(last.rss_kb),
        },
        "fds": {
            "start": sum(first.fds.values()),
            "end": sum(last.fds.values()),
            "per_hour": round(slope_per_hour(total_fds), 1),
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
