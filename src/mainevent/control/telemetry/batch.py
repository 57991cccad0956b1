"""The JSON batch of CMCD v2 event records (``POST /v1/cmcd/{event}/batch``), sans-IO.

For senders that gather many sessions' records (a relay beside the edges, a load generator):
``{"records": [{"sid": "…", "sn": 3, "e": "t", "ts": 1765000000000, "sta": "p", "pb": 2500,
…}, …]}``, each record the CMCD v2 event-mode keys as JSON values (numbers, strings, booleans;
``br``/``bl`` as plain numbers, not inner lists). One msgspec call decodes and validates the
whole body straight into :class:`~.events.PlayerReport` values. A body whose records carry
other keys takes a slower second pass: CMCD keys the collector does not read (``v``, ``sf``,
``mtp``…) are dropped, keys that are not CMCD keys are dropped and counted, as on the text path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from mainevent.control.telemetry.cmcd import CMCD_KEYS
from mainevent.control.telemetry.events import PlayerReport

__all__ = ["BatchError", "ReportBatch", "decode_report_batch", "encode_report_batch"]


class _Batch(msgspec.Struct):
    records: list[PlayerReport]


_DECODER = msgspec.json.Decoder(_Batch)
_ENCODER = msgspec.json.Encoder()
_WIRE_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(PlayerReport))
"""The keys a record may carry on the fast path (the CMCD keys the core reads)."""
_WHERE = re.compile(r"\s*-\s*at\s*`\$\.records\[(\d+)\](?:\.(\w+))?`$")


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """A decoded batch: its reports in order, and how many non-CMCD keys were ignored."""

    reports: list[PlayerReport]
    unknown_keys: int


@dataclass(frozen=True, slots=True)
class BatchError:
    """Why a batch body was refused (nothing of it is used)."""

    message: str
    """What is wrong and where (``record 3: sn: Expected `int` >= 0``)."""
    record: int | None = None
    """1-based index of the bad record, None when the body as a whole is wrong."""
    oversize: bool = False
    """More records than the collector takes in one batch (413)."""


def encode_report_batch(records: list[dict[str, Any]]) -> bytes:
    """The request body for ``POST /v1/cmcd/{event}/batch`` (records as CMCD key → value)."""
    return _ENCODER.encode({"records": records})


def _error(exc: msgspec.ValidationError) -> BatchError:
    text = str(exc)
    m = _WHERE.search(text)
    if m is None:
        return BatchError(f"bad batch: {text}")
    what = text[: m.start()]
    index = int(m.group(1)) + 1
    key = f"{m.group(2)}: " if m.group(2) else ""
    return BatchError(f"record {index}: {key}{what}", record=index)


def _lenient(body: bytes) -> tuple[list[PlayerReport], int] | BatchError:
    """The second pass: records with keys the fast path does not take."""
    doc = msgspec.json.decode(body)
    rows = doc.get("records") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        return BatchError('body must be an object with a "records" list')
    unknown = 0
    kept: list[Any] = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            return BatchError(f"record {i}: expected an object of CMCD keys", record=i)
        extra = [k for k in row if k not in _WIRE_KEYS]
        if extra:
            unknown += sum(1 for k in extra if k not in CMCD_KEYS)
            row = {k: v for k, v in row.items() if k in _WIRE_KEYS}
        kept.append(row)
    try:
        return msgspec.convert({"records": kept}, _Batch).records, unknown
    except msgspec.ValidationError as exc:
        return _error(exc)


def decode_report_batch(body: bytes, max_records: int) -> ReportBatch | BatchError:
    """A batch body → its reports, or what is wrong with it (record index included)."""
    try:
        reports, unknown = _DECODER.decode(body).records, 0
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            return _error(exc)
        second = _lenient(body)
        if isinstance(second, BatchError):
            return second
        reports, unknown = second
    except msgspec.DecodeError as exc:
        return BatchError(f"body is not JSON: {exc}")
    if len(reports) > max_records:
        return BatchError(f"more than {max_records} records in one batch", oversize=True)
    return ReportBatch(reports, unknown)
