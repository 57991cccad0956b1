"""SRT ingest through the gateway's UDP relay: libsrt checks the passphrase inside ffmpeg's
private listener; the relay refuses second callers and floods, and every refusal is logged with
the peer address and counted.

Real ffmpeg (libsrt) on loopback. These also pin down what ffmpeg's SRT listener cannot do, so
the docs stay true: it does not compare the streamid (see `gateway.SRT_LIMITS`).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mainevent.media.encode.ffmpeg import IngestSpec
from mainevent.media.encode.pipeline import Pipeline, PipelineCollector
from tests.service.test_ingest_gateway import (
    GATEWAY_LOG,
    keeps_flowing,
    make_pipeline,
    push,
    refusals,
    serving,
    until,
    venue_feed,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PASSPHRASE = "correct-horse-battery"


def scrape(pipeline: Pipeline) -> str:
    registry = CollectorRegistry()
    registry.register(PipelineCollector([pipeline]))
    return generate_latest(registry).decode()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def srt_spec() -> IngestSpec:
    return IngestSpec("srt", "127.0.0.1", free_udp_port(), "venue-key-1", PASSPHRASE)


def caller_url(spec: IngestSpec, *, streamid: str | None = None, passphrase: str | None) -> str:
    url = f"srt://127.0.0.1:{spec.port}?mode=caller&latency=120000&pkt_size=1316"
    url += f"&streamid={streamid or spec.stream_key}"
    if passphrase:
        url += f"&passphrase={passphrase}&pbkeylen=16"
    return url


async def test_wrong_or_missing_passphrase_is_refused_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """libsrt refuses a wrong or missing passphrase; each is logged and counted, nothing starts,
    and the venue with the right passphrase then goes live."""
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOG)
    spec = srt_spec()
    pipeline = make_pipeline(tmp_path, spec)
    async with serving(pipeline):
        rc, _ = await push(caller_url(spec, passphrase="wrong-horse-battery"))
        assert rc != 0
        rc, _ = await push(caller_url(spec, passphrase=None))
        assert rc != 0
        await until(
            lambda: (
                refusals(pipeline)["wrong_passphrase"] == 1
                and refusals(pipeline)["passphrase_required"] == 1
            ),
            5,
            "the listener's refusal lines",
        )
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            re.search(r"ingest refused wrong_passphrase from 127\.0\.0\.1:\d+:", line)
            for line in lines
        ), lines
        assert any(
            re.search(r"ingest refused passphrase_required from 127\.0\.0\.1:\d+:", line)
            for line in lines
        ), lines
        assert pipeline.health.bytes_total == 0
        assert pipeline.health.connects == 0
        assert pipeline.runs == 0
        # The listener kept listening: the right passphrase gets in.
        async with venue_feed(spec.publish_url):
            await keeps_flowing(pipeline, within=20)
        assert pipeline.health.connects == 1
        assert sum(refusals(pipeline).values()) == 2


async def test_second_caller_is_refused_logged_and_counted_while_the_live_one_flows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second SRT caller (even with the right passphrase) is refused at the relay, logged with
    its address and counted once; the live feed is untouched."""
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOG)
    spec = srt_spec()
    pipeline = make_pipeline(tmp_path, spec)
    async with serving(pipeline), venue_feed(spec.publish_url):
        await keeps_flowing(pipeline, within=20)
        assert str(pipeline.status()["ingest"]["live_peer"]).startswith("127.0.0.1:")
        rc, _ = await push(caller_url(spec, passphrase=PASSPHRASE), seconds=1.0)
        assert rc != 0  # the caller's connection setup times out
        await keeps_flowing(pipeline)
        assert pipeline.health.connects == 1
        assert pipeline.restarts == 0
        assert refusals(pipeline)["second_publisher"] == 1
        assert sum(refusals(pipeline).values()) == 1
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            re.search(r"ingest refused second_publisher from 127\.0\.0\.1:\d+:", line)
            for line in lines
        ), lines
        metrics = scrape(pipeline)
        assert (
            'mainevent_ingest_refused_total{pipeline="primary",reason="second_publisher"} 1.0'
            in metrics
        ), metrics


async def test_ffmpeg_srt_listener_does_not_check_the_streamid(tmp_path: Path) -> None:
    """Pinned limitation: with the right passphrase, a caller with another streamid is let in, so
    with SRT only the passphrase is a credential (the status says so)."""
    spec = srt_spec()
    pipeline = make_pipeline(tmp_path, spec)
    async with serving(pipeline):
        rc, _ = await push(caller_url(spec, streamid="someone-else", passphrase=PASSPHRASE))
        assert rc == 0
        assert pipeline.health.connects == 1
        assert pipeline.health.bytes_total > 0
        assert any("streamid" in limit for limit in pipeline.status()["ingest"]["limits"])


async def test_a_flood_of_srt_handshakes_and_garbage_is_limited_and_counted(
    tmp_path: Path,
) -> None:
    """Thousands of UDP datagrams at the SRT port (forged handshakes from many source ports and
    random bytes) while a venue is live: dropped at the relay and counted per attempt, nothing new
    starts, the feed keeps flowing, no restart."""
    spec = srt_spec()
    pipeline = make_pipeline(tmp_path, spec)
    async with serving(pipeline), venue_feed(spec.publish_url):
        await keeps_flowing(pipeline, within=20)
        # An SRT control packet: bit 0 set, type 0 (handshake), then garbage.
        handshake = bytes([0x80, 0x00, 0x00, 0x00]) + bytes(12)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]
        try:
            for i in range(3000):
                payload = handshake + os.urandom(48) if i % 2 else os.urandom(64)
                socks[i % len(socks)].sendto(payload, ("127.0.0.1", spec.port))
        finally:
            for s in socks:
                s.close()
        await until(
            lambda: refusals(pipeline)["rate_limited"] > 0, 5, "the flood to be rate limited"
        )
        counted = refusals(pipeline)
        # Each forged source port is one refused attempt, not one count per datagram.
        assert counted["second_publisher"] + counted["rate_limited"] <= len(socks), counted
        assert counted["second_publisher"] >= 1, counted
        await keeps_flowing(pipeline)
        assert pipeline.health.connects == 1
        assert pipeline.restarts == 0
        assert pipeline.runs == 1
