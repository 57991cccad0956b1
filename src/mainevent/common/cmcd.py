"""CMCD encoding shared by the collector and the headless player (CTA-5004 / CTA-5004-B).

``encode_dict`` writes one structured-field dictionary exactly as hls.js's encoder
(``@svta/cml-cmcd``) does: keys sorted, strings quoted, tokens bare, true as a bare key, false
dropped, v2 inner lists as ``(a b)``. Decoding lives with the collector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["CmcdValue", "encode_dict"]

CmcdValue = bool | int | float | str | tuple["CmcdValue", ...]


def encode_dict(data: Mapping[str, CmcdValue], keys: Iterable[str] | None = None) -> str:
    """Encode as cml-cmcd does: keys sorted, strings quoted, true as a bare key, ``?0`` dropped."""
    out: list[str] = []
    for k in sorted(keys if keys is not None else data):
        v = data[k]
        if v is False:
            continue
        if v is True:
            out.append(k)
        elif k in _TOKEN_KEYS and isinstance(v, str):
            out.append(f"{k}={v}")
        else:
            out.append(f"{k}={_encode_value(v)}")
    return ",".join(out)


# cml-cmcd sends these string values as structured-field tokens (unquoted).
_TOKEN_KEYS = frozenset({"ot", "sf", "st", "e", "sta"})


def _encode_value(v: CmcdValue) -> str:
    if isinstance(v, tuple):
        return "(" + " ".join(_encode_value(x) for x in v) + ")"
    if isinstance(v, bool):
        return "?1" if v else "?0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
