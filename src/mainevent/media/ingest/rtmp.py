"""Sans-IO RTMP, server side up to `publish`: what the ingest gateway knows of a contribution client.

`ServerSession` answers the handshake and the NetConnection/NetStream commands a publisher sends
(connect → releaseStream/FCPublish → createStream → publish), parses the chunk stream (AMF0
commands, Set Chunk Size, Abort) and stops at `ConnectRequested` and `PublishRequested`, so the
gateway decides on the app and the stream key before anything is relayed. Every byte the client
sent after its handshake is kept (`replay`): the gateway replays it, unchanged, to the internal
ffmpeg listener, whose chunk-stream state then matches the client's. Malformed or hostile input
raises `RtmpError` and nothing else; sizes are bounded before `publish`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "HANDSHAKE_SIZE",
    "WINDOW_ACK_SIZE",
    "AmfValue",
    "ConnectRequested",
    "PublishRequested",
    "RtmpError",
    "ServerSession",
    "acknowledgement",
    "client_handshake",
    "client_handshake_finish",
    "decode_amf0",
    "encode_amf0",
]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DEFAULT_CHUNK_SIZE = 128
SERVER_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000
PUBLISH_STREAM_ID = 1
# Before `publish` a client only sends small commands: anything bigger is refused, so a
# stranger cannot make the gateway buffer more than this.
MAX_MESSAGE_BEFORE_PUBLISH = 64 * 1024
MAX_BYTES_BEFORE_PUBLISH = 256 * 1024
MAX_CHUNK_STREAMS = 32
MAX_AMF_DEPTH = 16

# Message type ids (RTMP 1.0 §5.4, §7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
_PROTOCOL_CONTROL = {SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL, WINDOW_ACK}
_IGNORED_BEFORE_PUBLISH = {SET_PEER_BANDWIDTH, DATA_AMF0, DATA_AMF3}

_CSID_CONTROL = 2
_CSID_COMMAND = 3
_CSID_STREAM = 5


class RtmpError(Exception):
    """The client's bytes are not an RTMP publisher we accept (malformed, hostile or unsupported)."""


AmfValue = float | bool | str | None | dict[str, "AmfValue"] | list["AmfValue"]


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """`connect`: the client names the application (`live` in `rtmp://host/live/<key>`)."""

    app: str
    tc_url: str | None


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """`publish`: the client names the stream it wants to push (the stream key)."""

    stream_name: str
    publish_type: str | None


Event = ConnectRequested | PublishRequested


# -- AMF0 ---------------------------------------------------------------------------------------


def decode_amf0(data: bytes, pos: int = 0, depth: int = 0) -> tuple[AmfValue, int]:
    """One AMF0 value from `data[pos:]`: (value, position after it)."""
    if depth > MAX_AMF_DEPTH:
        raise RtmpError("AMF0 nesting too deep")
    marker = _take(data, pos, 1)[0]
    pos += 1
    if marker == 0x00:  # number
        return struct.unpack(">d", _take(data, pos, 8))[0], pos + 8
    if marker == 0x01:  # boolean
        return _take(data, pos, 1)[0] != 0, pos + 1
    if marker == 0x02:  # string
        return _string(data, pos, 2)
    if marker in (0x03, 0x08, 0x10):  # object, ECMA array, typed object
        if marker == 0x08:
            _take(data, pos, 4)  # an approximate count: the end marker decides
            pos += 4
        elif marker == 0x10:
            _, pos = _string(data, pos, 2)  # class name
        return _properties(data, pos, depth)
    if marker in (0x05, 0x06, 0x0D):  # null, undefined, unsupported
        return None, pos
    if marker == 0x07:  # reference: we never need the referenced value
        _take(data, pos, 2)
        return None, pos + 2
    if marker == 0x0A:  # strict array
        (count,) = struct.unpack(">I", _take(data, pos, 4))
        pos += 4
        if count > len(data) - pos:  # every value takes at least one byte
            raise RtmpError(f"AMF0 array of {count} values in {len(data) - pos} bytes")
        items: list[AmfValue] = []
        for _ in range(count):
            value, pos = decode_amf0(data, pos, depth + 1)
            items.append(value)
        return items, pos
    if marker == 0x0B:  # date: milliseconds + time zone
        (ms,) = struct.unpack(">d", _take(data, pos, 8))
        _take(data, pos + 8, 2)
        return ms, pos + 10
    if marker in (0x0C, 0x0F):  # long string, XML document
        return _string(data, pos, 4)
    raise RtmpError(f"unsupported AMF0 marker 0x{marker:02x}")


def _take(data: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(data):
        raise RtmpError("AMF0 value truncated")
    return data[pos : pos + n]


def _string(data: bytes, pos: int, width: int) -> tuple[str, int]:
    n = int.from_bytes(_take(data, pos, width), "big")
    raw = _take(data, pos + width, n)
    try:
        return raw.decode("utf-8"), pos + width + n
    except UnicodeDecodeError:
        raise RtmpError("AMF0 string is not UTF-8") from None


def _properties(data: bytes, pos: int, depth: int) -> tuple[dict[str, AmfValue], int]:
    out: dict[str, AmfValue] = {}
    while True:
        key, pos = _string(data, pos, 2)
        if not key and _take(data, pos, 1)[0] == 0x09:
            return out, pos + 1
        out[key], pos = decode_amf0(data, pos, depth + 1)


def decode_amf0_all(data: bytes) -> list[AmfValue]:
    """Every AMF0 value in `data` (a command message body)."""
    values: list[AmfValue] = []
    pos = 0
    while pos < len(data):
        value, pos = decode_amf0(data, pos)
        values.append(value)
    return values


def encode_amf0(value: AmfValue) -> bytes:
    """AMF0 encoding of a number, boolean, string, null, object (dict) or strict array (list)."""
    if isinstance(value, bool):
        return b"\x01" + (b"\x01" if value else b"\x00")
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return b"\x0c" + struct.pack(">I", len(raw)) + raw
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if value is None:
        return b"\x05"
    if isinstance(value, dict):
        body = b"".join(
            struct.pack(">H", len(k.encode())) + k.encode() + encode_amf0(v)
            for k, v in value.items()
        )
        return b"\x03" + body + b"\x00\x00\x09"
    return b"\x0a" + struct.pack(">I", len(value)) + b"".join(encode_amf0(v) for v in value)


# -- outgoing messages --------------------------------------------------------------------------


def _message(
    csid: int, type_id: int, payload: bytes, *, stream_id: int = 0, chunk_size: int
) -> bytes:
    """One message as chunks: a full (type 0) header, then type-3 continuation headers."""
    header = bytes([csid]) + b"\x00\x00\x00" + len(payload).to_bytes(3, "big") + bytes([type_id])
    out = bytearray(header + stream_id.to_bytes(4, "little"))
    for i in range(0, max(len(payload), 1), chunk_size):
        if i:
            out.append(0xC0 | csid)
        out += payload[i : i + chunk_size]
    return bytes(out)


def acknowledgement(sequence: int) -> bytes:
    """Acknowledgement of `sequence` bytes received (sent every window; needs no chunk state)."""
    return _message(
        _CSID_CONTROL,
        ACKNOWLEDGEMENT,
        (sequence & 0xFFFFFFFF).to_bytes(4, "big"),
        chunk_size=DEFAULT_CHUNK_SIZE,
    )


def client_handshake(nonce: bytes) -> bytes:
    """C0 + C1 of a plain (version 3) handshake, as the gateway sends it to the internal listener."""
    return bytes([RTMP_VERSION]) + bytes(8) + _nonce(nonce)


def client_handshake_finish(s0s1s2: bytes) -> bytes:
    """C2 for the server's S0 + S1 + S2 (it echoes S1)."""
    if len(s0s1s2) != 1 + 2 * HANDSHAKE_SIZE or s0s1s2[0] != RTMP_VERSION:
        raise RtmpError("the internal RTMP listener sent an unexpected handshake")
    return s0s1s2[1 : 1 + HANDSHAKE_SIZE]


def _nonce(nonce: bytes) -> bytes:
    return (nonce + bytes(HANDSHAKE_SIZE - 8))[: HANDSHAKE_SIZE - 8]


# -- the server session -------------------------------------------------------------------------


@dataclass(slots=True)
class _ChunkStream:
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


class ServerSession:
    """The server side of one RTMP connection, from the first byte to an accepted `publish`.

    Feed bytes with `receive_data`, pull events with `next_event` (None: more data needed), send
    `data_to_send()` to the client. After `ConnectRequested` call `accept_connect` or
    `reject_connect`, after `PublishRequested` `accept_publish` or `reject_publish`, before asking
    for the next event.
    """

    def __init__(self, nonce: bytes = b"") -> None:
        self._nonce = _nonce(nonce)
        self._state = "c0c1"
        self._buf = bytearray()  # everything after C2: the replay
        self._hs = bytearray()
        self._pos = 0  # parse position in _buf
        self._in_chunk = DEFAULT_CHUNK_SIZE
        self._out_chunk = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _ChunkStream] = {}
        self._message: tuple[int, int, bytes] | None = None
        self._out = bytearray()
        self._received = 0
        self._connect_tid = 0.0
        self._publish_tid = 0.0
        self._next_stream_id = PUBLISH_STREAM_ID
        self.stream_name: str | None = None

    # -- input / output --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client (after publish is accepted, they only extend the replay)."""
        self._received += len(data)
        if self._state in ("c0c1", "c2"):
            self._hs += data
        else:
            self._buf += data
        excess = len(self._buf) + max(0, len(self._hs) - 1 - 2 * HANDSHAKE_SIZE)
        if self._state != "publishing" and excess > MAX_BYTES_BEFORE_PUBLISH:
            raise RtmpError(f"more than {MAX_BYTES_BEFORE_PUBLISH} bytes before publish")

    def data_to_send(self) -> bytes:
        """Bytes to write to the client now."""
        out, self._out = bytes(self._out), bytearray()
        return out

    @property
    def bytes_received(self) -> int:
        """Every byte received from the client (the sequence number acknowledgements count)."""
        return self._received

    @property
    def replay(self) -> bytes:
        """Every byte the client sent after the handshake, for the internal listener."""
        return bytes(self._buf)

    def next_event(self) -> Event | None:
        """The next decision the gateway must take, or None when more data is needed."""
        if self._state.startswith("decide"):
            raise RuntimeError("accept or reject the pending request first")
        if self._state in ("publishing", "closed"):
            return None
        if self._state in ("c0c1", "c2") and not self._handshake():
            return None
        while self._state in ("connect", "commands"):
            message = self._next_message()
            if message is None:
                return None
            event = self._on_message(*message)
            if event is not None:
                return event
        return None

    # -- decisions ---------------------------------------------------------------------------

    def accept_connect(self) -> None:
        self._expect("decide-connect")
        self._send(_CSID_CONTROL, WINDOW_ACK, WINDOW_ACK_SIZE.to_bytes(4, "big"))
        self._send(_CSID_CONTROL, SET_PEER_BANDWIDTH, WINDOW_ACK_SIZE.to_bytes(4, "big") + b"\x02")
        self._send(_CSID_CONTROL, SET_CHUNK_SIZE, SERVER_CHUNK_SIZE.to_bytes(4, "big"))
        self._out_chunk = SERVER_CHUNK_SIZE
        self._command(
            "_result",
            self._connect_tid,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )
        self._state = "commands"

    def reject_connect(self, description: str) -> None:
        self._expect("decide-connect")
        self._command(
            "_error",
            self._connect_tid,
            None,
            {
                "level": "error",
                "code": "NetConnection.Connect.Rejected",
                "description": description,
            },
        )
        self._state = "closed"

    def accept_publish(self) -> None:
        self._expect("decide-publish")
        self._send(_CSID_CONTROL, USER_CONTROL, b"\x00\x00" + PUBLISH_STREAM_ID.to_bytes(4, "big"))
        self._status("status", "NetStream.Publish.Start", f"{self.stream_name} is now published.")
        self._state = "publishing"

    def reject_publish(self, description: str, code: str = "NetStream.Publish.BadName") -> None:
        self._expect("decide-publish")
        self._status("error", code, description)
        self._state = "closed"

    def _expect(self, state: str) -> None:
        if self._state != state:
            raise RuntimeError(f"no pending {state.removeprefix('decide-')} request")

    # -- handshake ---------------------------------------------------------------------------

    def _handshake(self) -> bool:
        if self._state == "c0c1":
            if not self._hs:
                return False
            if self._hs[0] != RTMP_VERSION:
                raise RtmpError(f"not an RTMP client (first byte 0x{self._hs[0]:02x})")
            if len(self._hs) < 1 + HANDSHAKE_SIZE:
                return False
            c1 = bytes(self._hs[1 : 1 + HANDSHAKE_SIZE])
            del self._hs[: 1 + HANDSHAKE_SIZE]
            # S0, S1 (time 0, zero version: the plain handshake), S2 (echo of C1).
            self._out += bytes([RTMP_VERSION]) + bytes(8) + self._nonce
            self._out += c1[:4] + bytes(4) + c1[8:]
            self._state = "c2"
        if len(self._hs) < HANDSHAKE_SIZE:
            return False
        # C2 should echo S1; encoders differ (digest handshakes), and ffmpeg only warns.
        self._buf += self._hs[HANDSHAKE_SIZE:]
        self._hs.clear()
        self._state = "connect"
        return True

    # -- chunk stream ------------------------------------------------------------------------

    def _next_message(self) -> tuple[int, int, bytes] | None:
        """(type id, message stream id, payload) of the next whole message, or None."""
        while self._parse_chunk():
            if self._message is not None:
                message, self._message = self._message, None
                return message
        return None

    def _parse_chunk(self) -> bool:
        """Consume one whole chunk if it is here; a completed message goes to `_message`."""
        buf, p = self._buf, self._pos
        if p >= len(buf):
            return False
        fmt, csid = buf[p] >> 6, buf[p] & 0x3F
        p += 1
        if csid < 2:
            extra = 1 if csid == 0 else 2
            if p + extra > len(buf):
                return False
            csid = 64 + buf[p] + (buf[p + 1] * 256 if extra == 2 else 0)
            p += extra
        header = (11, 7, 3, 0)[fmt]
        if p + header > len(buf):
            return False
        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} starts with a type-{fmt} header")
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise RtmpError(f"more than {MAX_CHUNK_STREAMS} chunk streams")
            cs = _ChunkStream()
        if fmt < 3 and cs.payload:
            raise RtmpError(f"new message header inside a message on chunk stream {csid}")
        extended = cs.extended
        length, type_id, stream_id = cs.length, cs.type_id, cs.stream_id
        if fmt < 3:
            extended = buf[p : p + 3] == b"\xff\xff\xff"
        if fmt < 2:
            length = int.from_bytes(buf[p + 3 : p + 6], "big")
            type_id = buf[p + 6]
        if fmt == 0:
            stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
        p += header + (4 if extended else 0)
        if length > MAX_MESSAGE_BEFORE_PUBLISH:
            raise RtmpError(f"message of {length} bytes before publish")
        take = min(self._in_chunk, length - len(cs.payload))
        if p + take > len(buf):
            return False
        # The whole chunk is here: commit its header and payload.
        self._streams[csid] = cs
        cs.extended, cs.length, cs.type_id, cs.stream_id = extended, length, type_id, stream_id
        cs.payload += buf[p : p + take]
        self._pos = p + take
        if len(cs.payload) == length:
            self._message = (type_id, stream_id, bytes(cs.payload))
            cs.payload.clear()
        return True

    # -- messages ----------------------------------------------------------------------------

    def _on_message(self, type_id: int, stream_id: int, payload: bytes) -> Event | None:
        if type_id == SET_CHUNK_SIZE:
            if len(payload) < 4:
                raise RtmpError("short Set Chunk Size")
            size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if size < 1:
                raise RtmpError("Set Chunk Size of 0")
            self._in_chunk = size
            return None
        if type_id == ABORT:
            if len(payload) < 4:
                raise RtmpError("short Abort message")
            aborted = self._streams.get(int.from_bytes(payload[:4], "big"))
            if aborted is not None:
                aborted.payload.clear()
            return None
        if type_id in _PROTOCOL_CONTROL or type_id in _IGNORED_BEFORE_PUBLISH:
            return None
        if type_id == COMMAND_AMF3:
            if not payload or payload[0] != 0:
                raise RtmpError("AMF3 command messages are not supported")
            payload = payload[1:]
        elif type_id != COMMAND_AMF0:
            raise RtmpError(f"message type {type_id} before publish")
        values = decode_amf0_all(payload)
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpError("command message without a name and transaction id")
        name, tid, args = values[0], values[1], values[2:]
        if not isinstance(tid, float):
            raise RtmpError(f"{name}: transaction id is not a number")
        if self._state == "connect":
            if name != "connect":
                raise RtmpError(f"expected connect, got {name[:40]!r}")
            obj = args[0] if args else None
            app = obj.get("app") if isinstance(obj, dict) else None
            if not isinstance(app, str):
                raise RtmpError("connect without an app")
            tc_url = obj.get("tcUrl") if isinstance(obj, dict) else None
            self._connect_tid = tid
            self._state = "decide-connect"
            return ConnectRequested(app, tc_url if isinstance(tc_url, str) else None)
        if name == "createStream":
            self._command("_result", tid, None, float(self._next_stream_id))
            self._next_stream_id += 1
        elif name == "releaseStream":
            self._command("_result", tid, None)
        elif name == "FCPublish":
            self._command("onFCPublish", 0.0, None, {"code": "NetStream.Publish.Start"})
        elif name == "publish":
            stream = args[1] if len(args) > 1 else None
            if not isinstance(stream, str):
                raise RtmpError("publish without a stream name")
            kind = args[2] if len(args) > 2 and isinstance(args[2], str) else None
            self.stream_name = stream
            self._publish_tid = tid
            self._state = "decide-publish"
            return PublishRequested(stream, kind)
        elif name in ("play", "play2"):
            raise RtmpError("this is an ingest: play is not served here")
        # Anything else (_checkbw, getStreamLength, FCUnpublish, …) needs no answer.
        return None

    def _send(self, csid: int, type_id: int, payload: bytes, *, stream_id: int = 0) -> None:
        self._out += _message(
            csid, type_id, payload, stream_id=stream_id, chunk_size=self._out_chunk
        )

    def _command(self, name: str, tid: float, *args: AmfValue) -> None:
        body = encode_amf0(name) + encode_amf0(tid) + b"".join(encode_amf0(a) for a in args)
        self._send(_CSID_COMMAND, COMMAND_AMF0, body)

    def _status(self, level: str, code: str, description: str) -> None:
        info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
        if self.stream_name is not None:
            info["details"] = self.stream_name
        body = encode_amf0("onStatus") + encode_amf0(0.0) + encode_amf0(None) + encode_amf0(info)
        self._send(_CSID_STREAM, COMMAND_AMF0, body, stream_id=PUBLISH_STREAM_ID)
