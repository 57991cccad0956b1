"""Content steering in manifests (rfc8216bis §4.4.6.6, DASH-IF content steering), sans-IO: one
pathway per CDN, every variant and rendition listed once per pathway with absolute URLs on that
CDN, the playback token (`/t/<token>`) carried in each, and the steering server named.

The media plane learns the CDNs and the steering server from its settings
(`delivery.cdns`, `delivery.steering_url`); it never asks the control plane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import quote

from mainevent.media.manifest.errors import ManifestError
from mainevent.media.manifest.model import ContentSteering, MediaRendition, MultivariantPlaylist

__all__ = ["DashSteering", "Pathways", "SteeringContext", "steered_multivariant"]

_PATHWAY = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SESSION = re.compile(r"[A-Za-z0-9._~-]{1,128}")


@dataclass(frozen=True, slots=True)
class Pathways:
    """The CDNs (pathway id → base URL, preferred first) and the steering server's URL prefix."""

    cdns: tuple[tuple[str, str], ...]
    steering_url: str
    """e.g. `http://steer.example/steering`; manifests point at `<it>/<event>/hls|dash`."""

    def __post_init__(self) -> None:
        if not self.cdns:
            raise ManifestError("content steering needs at least one CDN")
        for name, base in self.cdns:
            if _PATHWAY.fullmatch(name) is None:
                raise ManifestError(f"pathway id {name!r} may only use A-Z a-z 0-9 . _ -")
            if not base.startswith(("http://", "https://")):
                raise ManifestError(f"CDN {name!r}: base URL {base!r} must be absolute")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.cdns)


@dataclass(frozen=True, slots=True)
class SteeringContext:
    """Who asked: the token of the request (if any), its session id, the pathway it starts on."""

    token: str | None = None
    session_id: str | None = None
    pathway: str | None = None

    def validate(self, pathways: Pathways) -> None:
        """`ManifestError` with a message a client can act on."""
        if self.pathway is not None and self.pathway not in pathways.names:
            raise ManifestError(
                f"unknown pathway {self.pathway!r}; this event's pathways: "
                + ", ".join(pathways.names)
            )
        if self.session_id is not None and _SESSION.fullmatch(self.session_id) is None:
            raise ManifestError(f"session id {self.session_id!r} is not URL-safe")

    def initial(self, pathways: Pathways) -> str:
        return self.pathway or pathways.names[0]

    def prefix(self) -> str:
        return "" if self.token is None else f"/t/{self.token}"

    def server_uri(self, pathways: Pathways, event: str, kind: str) -> str:
        query = [f"p={quote(self.initial(pathways), safe='')}"]
        if self.session_id is not None:
            query.insert(0, f"sid={quote(self.session_id, safe='')}")
        return f"{pathways.steering_url.rstrip('/')}/{event}/{kind}?" + "&".join(query)


def steered_multivariant(
    base: MultivariantPlaylist, pathways: Pathways, event: str, ctx: SteeringContext
) -> MultivariantPlaylist:
    """`base` (relative URIs) with every variant and rendition once per pathway.

    Each pathway gets its own audio group (`<group>-<pathway>`) so a switch of pathway
    switches audio too; `STABLE-VARIANT-ID` (the variant's URI without `/index.m3u8`) is the
    same across pathways, so players keep their rung when they switch.
    """
    ctx.validate(pathways)
    prefix = ctx.prefix()
    variants = []
    media: list[MediaRendition] = []
    for name, root in pathways.cdns:
        url = f"{root.rstrip('/')}{prefix}/live/{event}/"
        for m in base.media:
            media.append(
                replace(
                    m,
                    group_id=f"{m.group_id}-{name}",
                    uri=None if m.uri is None else url + m.uri,
                )
            )
        for v in base.variants:
            variants.append(
                replace(
                    v,
                    uri=url + v.uri,
                    audio=None if v.audio is None else f"{v.audio}-{name}",
                    pathway_id=name,
                    stable_variant_id=v.stable_variant_id or v.uri.split("/")[0],
                )
            )
    return replace(
        base,
        variants=tuple(variants),
        media=tuple(media),
        content_steering=ContentSteering(
            server_uri=ctx.server_uri(pathways, event, "hls"), pathway_id=ctx.initial(pathways)
        ),
    )


@dataclass(frozen=True, slots=True)
class DashSteering:
    """What an MPD needs for steering: one `BaseURL` per CDN and the `ContentSteering` element."""

    base_urls: tuple[tuple[str, str], ...]
    """(serviceLocation, URL) in preference order."""
    server_url: str
    default_location: str

    @classmethod
    def of(cls, pathways: Pathways, event: str, ctx: SteeringContext) -> DashSteering:
        ctx.validate(pathways)
        prefix = ctx.prefix()
        return cls(
            base_urls=tuple(
                (name, f"{root.rstrip('/')}{prefix}/live/{event}/") for name, root in pathways.cdns
            ),
            server_url=ctx.server_uri(pathways, event, "dash"),
            default_location=ctx.initial(pathways),
        )
