"""The API's JSON parser: DRF's, reading the body through endpoints_app.jsonbody, so a body nested
too deeply is a 400 naming the problem, never a RecursionError (500). Strings holding NUL (\\u0000)
or a lone surrogate (\\ud800-\\udfff, not a character) are refused too: PostgreSQL cannot store
them in text, so they would fail a write with a 500."""

import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from endpoints_app import jsonbody
from endpoints_app.errors import InvalidInput


class StudioJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            value = jsonbody.loads(raw.decode(encoding) if raw else raw)
        except (jsonbody.JSONError, UnicodeDecodeError) as exc:
            raise ParseError(str(exc)) from None
        # Only an escape can bring either in (raw UTF-8 holds no surrogate), so most bodies skip the walk.
        if _ESCAPE.search(raw) and (field := _unstorable_at(value)) is not None:
            raise InvalidInput(f"{field or 'The body'} holds a NUL character (\\u0000) or a lone surrogate "
                               "(\\ud800-\\udfff); the studio stores neither.", field=field or None)
        return value


_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_at(value: Any, path: str = "") -> str | None:
    """The path ("a.b[2]") of the first string holding NUL or a lone surrogate, or None."""
    if isinstance(value, str):
        return path if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if _UNSTORABLE.search(str(key)):
                return path
            if (found := _unstorable_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _unstorable_at(item, f"{path}[{index}]")) is not None:
                return found
    return None
