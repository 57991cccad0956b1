"""Content steering client of the headless player, sans-IO: what hls.js does with
`EXT-X-CONTENT-STEERING` (rfc8216bis §7). It says which URL to ask and when, reads the steering
manifest, and names the pathway to play; the session switches at the next segment boundary.

    client = SteeringClient.from_multivariant(pl, master_url)
    url = client.request_url(throughput_bps)       # at client.next_at (epoch s)
    client.on_response(status, body, retry_after, now) -> pathway to switch to, or None

Rules kept: TTL (default 300 s when absent), RELOAD-URI resolved against the last steering URL,
`_HLS_pathway` and `_HLS_throughput` appended, the first pathway of PATHWAY-PRIORITY that the
playlist has, 410 stops steering, 429 waits Retry-After, other failures retry after the TTL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from mainevent.media.manifest import MultivariantPlaylist

__all__ = ["SteeringClient"]

DEFAULT_TTL_S = 300.0


@dataclass(slots=True)
class SteeringClient:
    pathways: tuple[str, ...]
    """Pathways the multivariant playlist lists, in its order."""
    pathway: str
    url: str
    """Where to ask next (SERVER-URI, then each RELOAD-URI), without our query parameters."""
    next_at: float = 0.0
    ttl_s: float = DEFAULT_TTL_S
    stopped: bool = False
    history: list[tuple[float, str]] = field(default_factory=list)
    """(when, pathway) of every switch the steering server asked for."""

    @classmethod
    def from_multivariant(cls, pl: MultivariantPlaylist, master_url: str) -> SteeringClient | None:
        cs = pl.content_steering
        pathways = tuple(dict.fromkeys(v.pathway_id for v in pl.variants if v.pathway_id))
        if cs is None or not pathways:
            return None
        initial = cs.pathway_id if cs.pathway_id in pathways else pathways[0]
        return cls(pathways=pathways, pathway=initial, url=urljoin(master_url, cs.server_uri))

    def request_url(self, throughput_bps: int | None) -> str:
        parts = urlsplit(self.url)
        extra = {"_HLS_pathway": self.pathway}
        if throughput_bps:
            extra["_HLS_throughput"] = str(throughput_bps)
        query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def on_response(
        self, status: int, body: bytes, retry_after: float | None, now: float
    ) -> str | None:
        """Digest one answer; returns the pathway to switch to (None: stay)."""
        if status == 410:
            self.stopped = True
            return None
        if status == 429:
            self.next_at = now + (retry_after if retry_after is not None else self.ttl_s)
            return None
        if status != 200:
            self.next_at = now + self.ttl_s
            return None
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict) or doc.get("VERSION") != 1:
                raise ValueError("not a VERSION 1 steering manifest")
            ttl = float(doc.get("TTL", DEFAULT_TTL_S))
            priority = [p for p in doc.get("PATHWAY-PRIORITY", []) if isinstance(p, str)]
            reload_uri = doc.get("RELOAD-URI")
        except (ValueError, TypeError):
            self.next_at = now + self.ttl_s
            return None
        self.ttl_s = max(1.0, ttl)
        self.next_at = now + self.ttl_s
        if isinstance(reload_uri, str) and reload_uri:
            self.url = urljoin(self.url, reload_uri)
        chosen = next((p for p in priority if p in self.pathways), None)
        if chosen is None or chosen == self.pathway:
            return None
        self.pathway = chosen
        self.history.append((now, chosen))
        return chosen
