"""The side-channel byte format, from the Unity side: split what the trainer sends, encode what Unity reports.

A side-channel block is ``[16-byte channel UUID (uuid.bytes_le)][int32 length][payload]`` repeated; payload values
are little-endian int32/float32 and strings as an int32 byte length plus ASCII.
"""
from __future__ import annotations

import struct
import uuid

from envs.standin.samplers import SAMPLER_KINDS, SamplerMessage

ENGINE_CONFIGURATION = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
ENVIRONMENT_PARAMETERS = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
STATS = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")
TRAINING_ANALYTICS = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")

ENGINE_SETTINGS = {0: ("resolution", "<ii"), 1: ("quality_level", "<i"), 2: ("time_scale", "<f"),
                   3: ("target_frame_rate", "<i"), 4: ("capture_frame_rate", "<i")}
STATS_SUM = 2  # StatsAggregationMethod.SUM


class Reader:
    """Reads one payload front to back; running past its end raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def unpack(self, fmt: str) -> tuple:
        try:
            values = struct.unpack_from(fmt, self.data, self.offset)
        except struct.error as error:
            raise ValueError(f"side-channel payload too short for {fmt!r} at byte {self.offset}") from error
        self.offset += struct.calcsize(fmt)
        return values

    def int32(self) -> int:
        return self.unpack("<i")[0]

    def string(self) -> str:
        length = self.int32()
        text = self.data[self.offset:self.offset + length].decode("ascii")
        self.offset += length
        return text


def split(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """The ``(channel id, payload)`` messages of one side-channel block."""
    messages, offset = [], 0
    while offset < len(data):
        if offset + 20 > len(data):
            raise ValueError(f"truncated side-channel header at byte {offset} of {len(data)}")
        channel = uuid.UUID(bytes_le=bytes(data[offset:offset + 16]))
        (length,) = struct.unpack_from("<i", data, offset + 16)
        offset += 20
        messages.append((channel, bytes(data[offset:offset + length])))
        offset += length
    return messages


def engine_setting(payload: bytes) -> tuple[str, tuple]:
    """One EngineConfiguration message: ``("time_scale", (20.0,))`` and so on."""
    reader = Reader(payload)
    kind = reader.int32()
    if kind not in ENGINE_SETTINGS:
        raise ValueError(f"unknown engine configuration type {kind}")
    name, fmt = ENGINE_SETTINGS[kind]
    return name, reader.unpack(fmt)


def environment_parameter(payload: bytes) -> tuple[str, float | SamplerMessage]:
    """One EnvironmentParameters message: ``(key, value)``, value a float or a :class:`SamplerMessage` (its seed,
    type and arguments, as ``EnvironmentParametersChannel.cs`` reads them)."""
    reader = Reader(payload)
    key, kind = reader.string(), reader.int32()
    if kind == 0:
        return key, reader.unpack("<f")[0]
    if kind != 1:
        raise ValueError(f"environment parameter {key!r}: unknown data type {kind}")
    seed, sampler = reader.int32(), reader.int32()
    if not 0 <= sampler < len(SAMPLER_KINDS):  # Unity warns and reads 0.0 from it
        return key, SamplerMessage(f"unknown sampler type {sampler}", seed, ())
    if SAMPLER_KINDS[sampler] == "multirangeuniform":
        count = reader.int32()
        if not 0 <= count <= (len(payload) - reader.offset) // 4:
            raise ValueError(f"environment parameter {key!r}: a float list of {count} values in {len(payload)} bytes")
        args = reader.unpack(f"<{count}f")
    else:
        args = reader.unpack("<ff")
    return key, SamplerMessage(SAMPLER_KINDS[sampler], seed, tuple(args))


def stat(key: str, value: float, aggregation: int = STATS_SUM) -> bytes:
    """One StatsSideChannel message, framed (what Unity's ``StatsRecorder.Add`` sends)."""
    encoded = key.encode("ascii")
    payload = struct.pack("<i", len(encoded)) + encoded + struct.pack("<fi", value, aggregation)
    return STATS.bytes_le + struct.pack("<i", len(payload)) + payload
