"""JSON exactly as Ollama's Go server writes it (``encoding/json``), byte for byte.

The direct-store path writes the params, config and manifest blobs the server itself would
write; their sha256 names them, so every byte must match: compact, HTML-escaped (``<`` as
``\\u003c``), Go's float formatting, map keys sorted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

#: Go's encoding/json escapes these even inside strings (HTML safety, JavaScript line ends).
_GO_STRING_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_float(value: float) -> str:
    """strconv.AppendFloat as encoding/json's floatEncoder calls it: shortest digits, positional
    from 1e-6 to 1e21, else exponent form with Go's two-digit exponent cleaned up (e-07 -> e-7)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"JSON cannot hold {value!r}")
    shortest = Decimal(repr(value))
    if value == 0 or 1e-6 <= abs(value) < 1e21:
        text = format(shortest, "f")
        return text[:-2] if text.endswith(".0") else text
    sign, digits, exponent = shortest.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    power = exponent + len(digits) - 1
    text = f"{'-' if sign else ''}{mantissa}e{'+' if power >= 0 else '-'}{abs(power):02d}"
    return re.sub(r"e-0(\d)$", r"e-\1", text)


def go_json(value: Any, *, sort_keys: bool = True) -> str:
    """``json.Marshal`` of a decoded JSON value, byte for byte.

    ``sort_keys`` applies to the top-level object only; nested objects are always sorted,
    because Ollama decodes them into Go maps.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escaped in _GO_STRING_ESCAPES.items():
            text = text.replace(char, escaped)
        return text
    if isinstance(value, Mapping):
        keys = sorted(value) if sort_keys else list(value)
        items = (f"{go_json(str(k))}:{go_json(value[k])}" for k in keys)
        return "{" + ",".join(items) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {value!r}")


def go_json_line(value: Any, *, sort_keys: bool = True) -> bytes:
    """What ``json.NewEncoder(w).Encode(value)`` writes: the JSON and a newline."""
    return (go_json(value, sort_keys=sort_keys) + "\n").encode("utf-8")


__all__ = ["go_json", "go_json_line"]
