"""XDF 1.0 at the byte level: chunk tags, variable-length integers, chunk headers, stream-header
XML and string-sample encoding. Pure functions shared by the writer (and by tests that build odd
files on purpose) and the chunk walk the reader uses to find where a crash cut a file.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import numpy as np

from shared_utils.checks import unknown_message

MAGIC = b"XDF:"
TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")

#: LSL channel_format -> little-endian numpy dtype (None: variable-length strings)
CHANNEL_FORMATS: dict[str, str | None] = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "string": None,
}


def varlen_int(n: int) -> bytes:
    """XDF variable-length integer: a 1-byte width (1, 4 or 8) then the value, little-endian."""
    if n < 0:
        raise ValueError(f"negative length {n}")
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2**32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def chunk_header(tag: int, content_len: int, stream_id: int | None = None) -> bytes:
    """Length prefix + tag (+ stream id) for a chunk whose content is ``content_len`` bytes."""
    sid = b"" if stream_id is None else struct.pack("<I", stream_id)
    return varlen_int(2 + len(sid) + content_len) + struct.pack("<H", tag) + sid


def stream_info_xml(
    name: str,
    type: str = "",
    channel_count: int = 1,
    nominal_srate: float = 0.0,
    channel_format: str = "float32",
    source_id: str = "",
    hostname: str = "",
    uid: str = "",
    created_at: float = 0.0,
    channel_labels: Sequence[str] | None = None,
    desc_xml: str = "",
) -> str:
    """Build the ``<info>`` XML that LSL's ``StreamInfo.as_xml()`` would give for these fields.

    ``desc_xml`` is inserted verbatim inside ``<desc>`` (e.g. ``<synchronization>...``).
    """
    if channel_format not in CHANNEL_FORMATS:
        raise ValueError(unknown_message("channel_format", channel_format, CHANNEL_FORMATS))
    desc = desc_xml
    if channel_labels:
        chans = "".join(
            f"<channel><label>{escape(str(lb))}</label></channel>" for lb in channel_labels
        )
        desc = f"<channels>{chans}</channels>{desc}"
    fields = [
        ("name", name),
        ("type", type),
        ("channel_count", str(int(channel_count))),
        ("channel_format", channel_format),
        ("source_id", source_id),
        ("nominal_srate", repr(float(nominal_srate))),
        ("version", "1.1000000000000001"),
        ("created_at", repr(float(created_at))),
        ("uid", uid),
        ("session_id", "default"),
        ("hostname", hostname),
    ]
    body = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields)
    return f'<?xml version="1.0"?><info>{body}<desc>{desc}</desc></info>'


def parse_info(info: Any) -> tuple[str, dict[str, str]]:
    """Accept XML text, an object with ``as_xml()`` (pylsl StreamInfo) or a mapping of fields."""
    if hasattr(info, "as_xml"):
        info = info.as_xml()
    if isinstance(info, Mapping):
        info = stream_info_xml(**info)
    if not isinstance(info, str):
        raise TypeError(
            f"stream info must be XML text, a mapping or a StreamInfo, not {type(info)}"
        )
    try:
        root = ET.fromstring(info)
    except ET.ParseError as e:
        raise ValueError(f"stream info is not valid XML: {e}") from None
    if root.tag != "info":
        raise ValueError(f"stream info root element must be <info>, not <{root.tag}>")
    values = {c.tag: (c.text or "").strip() for c in root}
    for key in ("name", "channel_count", "nominal_srate", "channel_format"):
        if key not in values:
            raise ValueError(f"stream info lacks <{key}>")
    if "stream_id" in values:
        raise ValueError("stream info must not contain <stream_id> (pyxdf warns about it)")
    if values["channel_format"] not in CHANNEL_FORMATS:
        raise ValueError(f"unsupported channel_format {values['channel_format']!r}")
    if not info.lstrip().startswith("<?xml"):
        info = '<?xml version="1.0"?>' + info
    return info, values


def add_desc(info_xml: str, tag: str, fields: Mapping[str, Any]) -> str:
    """``info_xml`` with ``<desc><tag><key>value</key>...</tag></desc>`` added (``desc`` is
    created when missing). The recorder tags every stream header of a session's file this way
    (``<session><exp_ref>``), so a stream cut out of the file still says where it came from."""
    decl = '<?xml version="1.0"?>' if info_xml.lstrip().startswith("<?xml") else ""
    root = ET.fromstring(info_xml)
    desc = root.find("desc")
    if desc is None:
        desc = ET.SubElement(root, "desc")
    block = ET.SubElement(desc, tag)
    for key, value in fields.items():
        ET.SubElement(block, key).text = "" if value is None else str(value)
    return decl + ET.tostring(root, encoding="unicode")


def encode_string_samples(timestamps: np.ndarray, samples: Sequence[Sequence[Any]]) -> bytes:
    """Samples chunk body (after NumSamples) for a string stream; values are str (UTF-8) or bytes."""
    parts: list[bytes] = []
    pack_ts = struct.Struct("<Bd").pack
    for ts, row in zip(timestamps, samples, strict=True):
        parts.append(pack_ts(8, float(ts)))
        for v in row:
            b = v if isinstance(v, bytes | bytearray) else str(v).encode("utf-8")
            parts.append(varlen_int(len(b)))
            parts.append(bytes(b))
    return b"".join(parts)


def complete_prefix(f: BinaryIO, size: int) -> int:
    """Length of the part of an XDF file that ends on a chunk boundary (the file is ``size``
    bytes). Walks chunk lengths only; stops at the first chunk that is cut or malformed."""
    f.seek(0)
    if f.read(4) != MAGIC:
        return 0
    pos = 4
    while pos < size:
        f.seek(pos)
        width = f.read(1)
        if not width or width[0] not in (1, 4, 8):
            break
        raw = f.read(width[0])
        if len(raw) < width[0]:
            break
        end = pos + 1 + width[0] + int.from_bytes(raw, "little")
        if end > size:
            break
        pos = end
    return pos
