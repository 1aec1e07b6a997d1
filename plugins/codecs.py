"""Built-in codecs: ``msgpack``, ``msgpack+lz4`` (the default) and ``msgpack+zstd``
(needs the optional ``zstandard`` package). ``COMPRESSION_THRESHOLD`` is the size above
which a payload is compressed."""

from __future__ import annotations

from typing import Any

import r1mw
from r1mw.codec import Lz4Codec, MsgpackCodec, ZstdCodec


@r1mw.hookimpl
def r1mw_register_codecs() -> dict[str, Any]:
    return {
        "msgpack": lambda pipeline: MsgpackCodec(pipeline.settings.compression_threshold),
        "msgpack+lz4": lambda pipeline: Lz4Codec(pipeline.settings.compression_threshold),
        "msgpack+zstd": lambda pipeline: ZstdCodec(pipeline.settings.compression_threshold),
    }
