"""Helpers for e2e tests: fetch and check what the live origin publishes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import httpx

from mainevent.media.encode.ffmpeg import find_ffmpeg
from mainevent.media.manifest import (
    MediaPlaylist,
    parse_media_playlist,
    parse_multivariant_playlist,
)


@dataclass(frozen=True)
class Snapshot:
    """One fetch of a media playlist."""

    at: float
    playlist: MediaPlaylist


def rendition_urls(client: httpx.Client, master_url: str) -> dict[str, str]:
    """rendition id → media playlist URL, from the multivariant playlist."""
    text = client.get(master_url).raise_for_status().text
    mv = parse_multivariant_playlist(text)
    base = master_url.rsplit("/", 1)[0]
    urls = {v.uri.split("/")[0]: f"{base}/{v.uri}" for v in mv.variants}
    for m in mv.media:
        if m.uri:
            urls[m.uri.split("/")[0]] = f"{base}/{m.uri}"
    return urls


def fetch_playlist(client: httpx.Client, url: str) -> MediaPlaylist:
    r = client.get(url)
    r.raise_for_status()
    return parse_media_playlist(r.text)


def decode_errors(init: bytes, segment: bytes) -> str:
    """ffmpeg's complaints decoding init+segment (empty string when it decodes cleanly)."""
    proc = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-v", "error", "-i", "pipe:0", "-f", "null", "-"],
        input=init + segment,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode(errors="replace").strip()
    return err if err or proc.returncode == 0 else f"exit code {proc.returncode}"
