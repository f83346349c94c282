"""The console's request bodies: bytes from the network -> a small JSON object, or `BodyError`.

Example (what a request handler does before it looks at the token, whatever the HTTP stack):

    try:
        body = parse_body(raw, content_type)        # {} for an empty body
    except BodyError as e:
        return error_response(e.status, str(e))      # 400, 413 or 415; nothing else changed

A command body is a flat JSON object of at most a few arguments (`actors.control`), so that is
what is accepted: at most `MAX_BODY` bytes of UTF-8, nesting at most `MAX_DEPTH` deep (checked on
the bytes before `json` parses them, so a deep body never reaches the recursive parser), at most
`MAX_ITEMS` keys and list items in all, keys of at most `MAX_KEY` characters and no key twice,
strings of at most `MAX_STRING` characters, integers within ±2**53 (what a float holds exactly)
and finite floats only (no NaN, Infinity or 1e999). Nothing but `BodyError` ever leaves
`parse_body`. Pure: no I/O, no HTTP framework, so any server can call it.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

MAX_BODY = 4096  # bytes of one request body
MAX_DEPTH = 3  # {"action": [0.1, 0.2]} is depth 2
MAX_ITEMS = 64  # keys and list items, all levels together
MAX_KEY = 64
MAX_STRING = 1024
MAX_INT = 2**53


class BodyError(ValueError):
    """A request body that is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)


def parse_body(raw: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); `BodyError` for anything else."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise BodyError(HTTPStatus.BAD_REQUEST, "the body must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_BODY:
        raise BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body is at most {MAX_BODY} bytes")
    if not raw:
        return {}
    if content_type != "application/json":  # cross-site form posts cannot send JSON
        raise BodyError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(HTTPStatus.BAD_REQUEST, "the body is not UTF-8") from None
    _check_depth(raw)
    counter = _Counter()
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_int=_int,
                          parse_float=_float, object_pairs_hook=counter.object)
    except BodyError:
        raise
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise BodyError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BodyError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    _check_values(body, counter)
    return body


def _check_depth(raw: bytes) -> None:
    """One pass over the bytes, brackets inside strings skipped: linear in the body's size."""
    depth, in_string, escaped = 0, False, False
    for c in raw:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BodyError(HTTPStatus.BAD_REQUEST, f"the body nests deeper than {MAX_DEPTH}")
        elif c in b"]}":
            depth -= 1


class _Counter:
    """Counts keys and list items as `json` builds objects; refuses duplicate and long keys."""

    def __init__(self) -> None:
        self.items = 0

    def add(self, n: int) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise BodyError(HTTPStatus.BAD_REQUEST, f"more than {MAX_ITEMS} keys and items")

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.add(len(pairs))
        out: dict[str, Any] = {}
        for key, value in pairs:
            if len(key) > MAX_KEY:
                raise BodyError(HTTPStatus.BAD_REQUEST, f"a key is at most {MAX_KEY} characters")
            if key in out:
                raise BodyError(HTTPStatus.BAD_REQUEST, f"the key {key[:MAX_KEY]!r} appears twice")
            out[key] = value
        return out


def _no_constant(name: str) -> Any:
    raise BodyError(HTTPStatus.BAD_REQUEST, f"{name} is not a number JSON allows")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 16:  # longer cannot be within 2**53; and int() of a huge
        raise BodyError(HTTPStatus.BAD_REQUEST, "an integer is out of range")  # string is slow
    value = int(text)
    if abs(value) > MAX_INT:
        raise BodyError(HTTPStatus.BAD_REQUEST, "an integer is out of range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(HTTPStatus.BAD_REQUEST, f"{text[:32]} is not a finite number")
    return value


def _check_values(value: Any, counter: _Counter) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _check_values(v, counter)
    elif isinstance(value, list):
        counter.add(len(value))
        for v in value:
            _check_values(v, counter)
    elif isinstance(value, str) and len(value) > MAX_STRING:
        raise BodyError(HTTPStatus.BAD_REQUEST, f"a string is at most {MAX_STRING} characters")
