"""Sans-IO RTMP server session: handshake, chunk stream, AMF0 commands up to `publish`.

A venue encoder must get through to `publish` with the answers it expects; anything else (garbage,
oversized or out-of-order input) must end in `RtmpError` — never another exception — before any
media could be relayed.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainevent.media.ingest.rtmp import (
    HANDSHAKE_SIZE,
    MAX_BYTES_BEFORE_PUBLISH,
    MAX_MESSAGE_BEFORE_PUBLISH,
    AmfValue,
    ConnectRequested,
    PublishRequested,
    RtmpError,
    ServerSession,
    acknowledgement,
    client_handshake,
    client_handshake_finish,
    decode_amf0,
    decode_amf0_all,
    encode_amf0,
)

C1 = (bytes([0, 0, 0, 7]) + bytes(4) + bytes(range(256)) * 6)[:HANDSHAKE_SIZE]
C0C1 = b"\x03" + C1
C2 = bytes(HANDSHAKE_SIZE)


def message(
    csid: int,
    type_id: int,
    payload: bytes,
    *,
    chunk_size: int = 128,
    stream_id: int = 0,
    timestamp: int = 0,
) -> bytes:
    """A client message: a type-0 header, then type-3 continuation chunks."""
    ts = min(timestamp, 0xFFFFFF)
    ext = struct.pack(">I", timestamp) if ts == 0xFFFFFF else b""
    head = bytes([csid]) + ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
    out = bytearray(head + bytes([type_id]) + stream_id.to_bytes(4, "little") + ext)
    for i in range(0, max(len(payload), 1), chunk_size):
        if i:
            out += bytes([0xC0 | csid]) + ext
        out += payload[i : i + chunk_size]
    return bytes(out)


def command(name: str, tid: float, *args: AmfValue, csid: int = 3, **kw: int) -> bytes:
    body = encode_amf0(name) + encode_amf0(tid) + b"".join(encode_amf0(a) for a in args)
    return message(csid, 20, body, **kw)


def connect(app: str = "live", **kw: int) -> bytes:
    return command(
        "connect", 1.0, {"app": app, "tcUrl": f"rtmp://h/{app}", "type": "nonprivate"}, **kw
    )


def set_chunk_size(size: int) -> bytes:
    return message(2, 1, struct.pack(">I", size))


PUBLISH_SEQUENCE = (
    command("releaseStream", 2.0, None, "key"),
    command("FCPublish", 3.0, None, "key"),
    command("createStream", 4.0, None),
    command("publish", 5.0, None, "key", "live", csid=8, stream_id=1),
)


def run(session: ServerSession, data: bytes) -> list[object]:
    """Feed `data`, accepting every request, and return the events."""
    session.receive_data(data)
    events: list[object] = []
    while (ev := session.next_event()) is not None:
        events.append(ev)
        if isinstance(ev, ConnectRequested):
            session.accept_connect()
        else:
            session.accept_publish()
    return events


def amf_commands(out: bytes) -> list[list[AmfValue]]:
    """The AMF0 command messages in the server's output (whole messages, any chunk size ≤ 4096)."""
    found: list[list[AmfValue]] = []
    pos = 0
    chunk = 128
    while pos < len(out):
        csid = out[pos] & 0x3F
        length = int.from_bytes(out[pos + 4 : pos + 7], "big")
        type_id = out[pos + 7]
        pos += 12
        payload = bytearray()
        while True:
            take = min(chunk, length - len(payload))
            payload += out[pos : pos + take]
            pos += take
            if len(payload) == length:
                break
            assert out[pos] == 0xC0 | csid
            pos += 1
        if type_id == 1:
            chunk = int.from_bytes(payload, "big")
        if type_id == 20:
            found.append(decode_amf0_all(bytes(payload)))
    return found


def test_publisher_gets_through_to_publish() -> None:
    """A venue encoder's session: handshake, connect, createStream and publish, each answered."""
    s = ServerSession(nonce=b"\x42" * (HANDSHAKE_SIZE - 8))
    assert run(s, C0C1) == []
    s0s1s2 = s.data_to_send()
    assert len(s0s1s2) == 1 + 2 * HANDSHAKE_SIZE
    assert s0s1s2[0] == 3
    assert s0s1s2[1 + 8 : 1 + 16] == b"\x42" * 8  # our S1 random
    assert s0s1s2[1 + HANDSHAKE_SIZE + 8 :] == C1[8:]  # S2 echoes C1
    assert client_handshake_finish(s0s1s2) == s0s1s2[1 : 1 + HANDSHAKE_SIZE]

    assert s.next_event() is None  # waiting for C2
    s.receive_data(C2 + connect())
    ev = s.next_event()
    assert ev == ConnectRequested("live", "rtmp://h/live")
    s.accept_connect()
    answers = amf_commands(s.data_to_send())
    assert answers[0][0] == "_result"
    assert answers[0][1] == 1.0
    assert isinstance(answers[0][3], dict)
    assert answers[0][3]["code"] == "NetConnection.Connect.Success"

    assert run(s, b"".join(PUBLISH_SEQUENCE[:3])) == []
    answers = amf_commands(s.data_to_send())
    assert ["_result", 2.0, None] in answers  # releaseStream
    assert ["_result", 4.0, None, 1.0] in answers  # createStream → stream 1
    s.receive_data(PUBLISH_SEQUENCE[3])
    assert s.next_event() == PublishRequested("key", "live")
    s.accept_publish()
    status = amf_commands(s.data_to_send())[-1]
    assert status[0] == "onStatus"
    assert isinstance(status[3], dict)
    assert status[3]["code"] == "NetStream.Publish.Start"
    # Everything after the handshake is kept, byte for byte, for the internal listener.
    assert s.replay == connect() + b"".join(PUBLISH_SEQUENCE)


def test_byte_by_byte_input_gives_the_same_events() -> None:
    """TCP may deliver one byte at a time: the session still sees the same requests."""
    stream = C0C1 + C2 + connect() + b"".join(PUBLISH_SEQUENCE)
    s = ServerSession()
    events: list[object] = []
    for i in range(len(stream)):
        events += run(s, stream[i : i + 1])
    assert events == [ConnectRequested("live", "rtmp://h/live"), PublishRequested("key", "live")]
    assert s.replay == stream[1 + 2 * HANDSHAKE_SIZE :]


@pytest.mark.parametrize("size", [1, 7, 4096, 100_000])
def test_set_chunk_size_is_honoured(size: int) -> None:
    """After Set Chunk Size the client's chunks have that size, down to 1 byte or past a message."""
    body = (
        encode_amf0("connect") + encode_amf0(1.0) + encode_amf0({"app": "live", "pad": "x" * 3000})
    )
    stream = C0C1 + C2 + set_chunk_size(size) + message(3, 20, body, chunk_size=size)
    s = ServerSession()
    assert run(s, stream) == [ConnectRequested("live", None)]


def test_compressed_headers_and_extended_timestamps() -> None:
    """Type 1/2/3 headers reuse the chunk stream's length/type; extended timestamps are skipped."""
    body = encode_amf0("createStream") + encode_amf0(4.0) + encode_amf0(None)
    s = ServerSession()
    stream = C0C1 + C2 + connect(timestamp=0x1000000)
    # type 1 (new length + type, delta 0), type 2 (delta only), type 3 (nothing): 3 createStreams
    stream += bytes([0x40 | 3]) + bytes(3) + len(body).to_bytes(3, "big") + b"\x14" + body
    stream += bytes([0x80 | 3]) + b"\x00\x00\x21" + body
    stream += bytes([0xC0 | 3]) + body
    assert run(s, stream) == [ConnectRequested("live", "rtmp://h/live")]
    out = s.data_to_send()[1 + 2 * HANDSHAKE_SIZE :]
    ids = [a[3] for a in amf_commands(out) if a[:2] == ["_result", 4.0]]
    assert ids == [1.0, 2.0, 3.0]


def test_two_byte_and_three_byte_chunk_stream_ids() -> None:
    """Chunk stream ids 64+ use the 2- and 3-byte basic headers."""
    s = ServerSession()
    one = connect()
    two = bytes([0]) + bytes([300 - 64]) + one[1:]  # csid 300 in the 2-byte form
    assert run(s, C0C1 + C2 + two) == [ConnectRequested("live", "rtmp://h/live")]
    three = bytes([1, (1000 - 64) & 0xFF, (1000 - 64) >> 8])
    publish = command("publish", 5.0, None, "key", "live", stream_id=1)
    assert run(s, three + publish[1:]) == [PublishRequested("key", "live")]


def test_abort_drops_a_partial_message() -> None:
    """Abort (type 2) discards a half-received message; the next message parses cleanly."""
    partial = command("connect", 1.0, {"app": "x" * 300})[: 12 + 128]  # first chunk only
    abort = message(2, 2, struct.pack(">I", 3))
    s = ServerSession()
    assert run(s, C0C1 + C2 + partial + abort + connect()) == [
        ConnectRequested("live", "rtmp://h/live")
    ]


def test_rejections_answer_the_client_then_close() -> None:
    """A wrong app gets NetConnection.Connect.Rejected; a wrong key a Publish error status."""
    s = ServerSession()
    s.receive_data(C0C1 + C2 + connect("other"))
    assert s.next_event() == ConnectRequested("other", "rtmp://h/other")
    s.data_to_send()
    s.reject_connect("unknown application")
    answer = amf_commands(s.data_to_send())[-1]
    assert answer[0] == "_error"
    assert isinstance(answer[3], dict)
    assert answer[3]["code"] == "NetConnection.Connect.Rejected"
    assert s.next_event() is None

    s = ServerSession()
    assert run(s, C0C1 + C2 + connect() + b"".join(PUBLISH_SEQUENCE[:3])) == [
        ConnectRequested("live", "rtmp://h/live")
    ]
    s.receive_data(PUBLISH_SEQUENCE[3])
    assert isinstance(s.next_event(), PublishRequested)
    s.data_to_send()
    s.reject_publish("stream key rejected")
    status = amf_commands(s.data_to_send())[-1]
    assert isinstance(status[3], dict)
    assert (status[3]["level"], status[3]["description"]) == ("error", "stream key rejected")
    with pytest.raises(RuntimeError):
        s.accept_publish()


def test_decisions_are_required_before_more_events() -> None:
    """Asking for the next event while a request is undecided is a programming error."""
    s = ServerSession()
    s.receive_data(C0C1 + C2 + connect())
    assert isinstance(s.next_event(), ConnectRequested)
    with pytest.raises(RuntimeError):
        s.next_event()


@pytest.mark.parametrize(
    ("stream", "words"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not an RTMP client"),
        (b"\x06" + bytes(HANDSHAKE_SIZE), "not an RTMP client"),  # RTMPE
        (C0C1 + C2 + command("play", 1.0, None, "key"), "expected connect"),
        (C0C1 + C2 + message(4, 9, b"\x17" * 20), "message type 9 before publish"),
        (C0C1 + C2 + connect() + message(4, 8, b"\xaf" * 20), "message type 8 before publish"),
        (C0C1 + C2 + bytes([0x43]) + bytes(7), "starts with a type-1 header"),
        (C0C1 + C2 + command("connect", 1.0, None), "connect without an app"),
        (C0C1 + C2 + command("connect", 1.0, {"app": 7.0}), "connect without an app"),
        (C0C1 + C2 + message(3, 20, b"\x02\x00\x07connect\x00\x00"), "truncated"),
        (C0C1 + C2 + message(3, 20, b"\x02\x00\x02\xff\xfe"), "not UTF-8"),
        (C0C1 + C2 + message(3, 20, b"\x11\x00"), "unsupported AMF0 marker 0x11"),
        (C0C1 + C2 + message(3, 17, b"\x11\x02"), "AMF3 command"),
        (C0C1 + C2 + message(3, 20, encode_amf0("connect") + b"\x02\x00\x00"), "transaction id"),
        (C0C1 + C2 + message(3, 20, encode_amf0(1.0) * 2), "without a name"),
        (C0C1 + C2 + message(2, 1, b"\x00\x00\x00\x00"), "Set Chunk Size of 0"),
        (C0C1 + C2 + message(2, 1, b"\x00"), "short Set Chunk Size"),
        (C0C1 + C2 + connect() + command("play", 2.0, None, "key"), "play is not served"),
        (
            C0C1 + C2 + connect() + command("publish", 2.0, None, 7.0),
            "publish without a stream name",
        ),
    ],
)
def test_bad_input_is_refused_with_the_reason(stream: bytes, words: str) -> None:
    """Each kind of bad input ends the session with an RtmpError saying what was wrong."""
    s = ServerSession()
    with pytest.raises(RtmpError, match=words):
        run(s, stream)


def test_sizes_before_publish_are_bounded() -> None:
    """A stranger cannot make the gateway buffer a big message or many chunk streams."""
    big = bytes([3]) + bytes(3) + (MAX_MESSAGE_BEFORE_PUBLISH + 1).to_bytes(3, "big") + b"\x14"
    with pytest.raises(RtmpError, match="bytes before publish"):
        run(ServerSession(), C0C1 + C2 + big + bytes(4))
    streams = b"".join(message(csid, 4, b"\x00\x03" + bytes(8)) for csid in range(3, 40))
    with pytest.raises(RtmpError, match="chunk streams"):
        run(ServerSession(), C0C1 + C2 + streams)
    s = ServerSession()
    run(s, C0C1 + C2)
    s.receive_data(bytes(MAX_BYTES_BEFORE_PUBLISH))
    with pytest.raises(RtmpError, match="bytes before publish"):
        s.receive_data(b"\x00")  # no parse needed: the buffer itself is bounded
    deep: AmfValue = "x"
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(RtmpError, match="too deep"):
        run(ServerSession(), C0C1 + C2 + command("connect", 1.0, {"app": "live", "d": deep}))


def test_client_side_handshake_helpers() -> None:
    """The gateway's own handshake with the internal listener: C0+C1, then C2 = S1."""
    c = client_handshake(b"\x01" * 10)
    assert len(c) == 1 + HANDSHAKE_SIZE
    assert c[0] == 3
    assert c[9:19] == b"\x01" * 10
    with pytest.raises(RtmpError):
        client_handshake_finish(b"\x03" + bytes(10))
    with pytest.raises(RtmpError):
        client_handshake_finish(b"\x06" + bytes(2 * HANDSHAKE_SIZE))


def test_acknowledgement_message() -> None:
    """Acknowledgement: type 3 on chunk stream 2, the byte count as 32 bits (wrapping)."""
    ack = acknowledgement(5_000_000)
    assert ack[0] == 2
    assert ack[7] == 3
    assert ack[12:] == (5_000_000).to_bytes(4, "big")
    assert acknowledgement(1 << 32)[12:] == bytes(4)


amf_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.integers(0x10000, 0x10004).map(lambda n: "a" * n),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(amf_values)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_amf0_round_trip(value: AmfValue) -> None:
    """What we encode (our answers) decodes back to the same value."""
    data = encode_amf0(value)
    assert decode_amf0(data) == (value, len(data))


def _decide_all(session: ServerSession, data: bytes) -> None:
    session.receive_data(data)
    while (ev := session.next_event()) is not None:
        if isinstance(ev, ConnectRequested):
            session.accept_connect()
        else:
            session.accept_publish()
    session.data_to_send()


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_garbage_only_ever_raises_rtmp_error(pieces: list[bytes]) -> None:
    """Random bytes, from the first byte or after a valid handshake, never raise anything else."""
    for prefix in (b"", C0C1 + C2, C0C1 + C2 + connect()):
        session = ServerSession()
        try:
            _decide_all(session, prefix)
            for piece in pieces:
                _decide_all(session, piece)
        except RtmpError:
            pass


@given(st.data())
def test_damaged_sessions_only_ever_raise_rtmp_error(data: st.DataObject) -> None:
    """A valid publisher's bytes with some bytes changed, cut or repeated: RtmpError or events."""
    stream = bytearray(
        C0C1 + C2 + set_chunk_size(64) + connect(chunk_size=64) + b"".join(PUBLISH_SEQUENCE)
    )
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(1 + HANDSHAKE_SIZE * 2, len(stream) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if op == "flip":
            stream[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del stream[i : i + data.draw(st.integers(1, 20))]
        else:
            stream[i:i] = stream[i : i + data.draw(st.integers(1, 20))]
    split = data.draw(st.integers(0, len(stream)))
    session = ServerSession()
    try:
        _decide_all(session, bytes(stream[:split]))
        _decide_all(session, bytes(stream[split:]))
    except RtmpError:
        pass
