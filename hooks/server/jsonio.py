"""JSON in and out. orjson is several times faster than the standard library on the large bodies
Metacontroller sends; sorted keys keep responses byte-for-byte deterministic."""
from __future__ import annotations

from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
