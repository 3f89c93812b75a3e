"""Reading a JSON request body a client sent: one rule for the API, the UI and the gateway.

Python's parser recurses once per nesting level, so a body of a few kilobytes of `[[[[...` raises
RecursionError (not ValueError) deep inside a request, and a body just under the interpreter's limit
parses but breaks whatever walks it next (json.dumps, a JSONField, a validator). A body nested
deeper than MAX_DEPTH is refused with JSONError, a ValueError, like any other invalid JSON, so
every caller that answers 400 for invalid JSON answers 400 for this too. No Django import: the
gateway and the model server use it as well."""

from __future__ import annotations

import json
import re
from typing import Any

# As .NET's JSON reader (MaxDepth 64): far beyond any request shape the studio serves (the deepest,
# chat messages with content parts, is 5), far below the interpreter's recursion limit.
MAX_DEPTH = 64


class JSONError(ValueError):
    """The body is not JSON the studio reads; str() is the message for the client."""


def loads(body: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed body, or JSONError (invalid JSON, or nested deeper than `max_depth`)."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise JSONError(f"The request body is JSON nested too deeply (more than {max_depth} levels).") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise JSONError(f"The request body is not valid JSON: {exc}") from None
    raw = body.encode() if isinstance(body, str) else bytes(body)
    # A body with no more brackets than the limit cannot nest deeper: most bodies stop here.
    if raw.count(b"[") + raw.count(b"{") > max_depth and too_deep(raw, max_depth):
        raise JSONError(f"The request body is JSON nested too deeply (more than {max_depth} levels).")
    return value


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """True when the JSON text `raw` (already known to be valid) nests more than `max_depth` levels.

    Done on the bytes at C speed, as it runs on the gateway's hot path: strings out, every bracket
    made square, everything else dropped; each pass then removes the innermost pairs, one level, so
    what is left after `max_depth` passes is nested deeper."""
    brackets = _STRING.sub(b"", raw).translate(_AS_SQUARE, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)
