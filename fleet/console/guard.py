"""What keeps the console's secrets and inputs in bounds: where the token comes from, the audit
log (rate-limited, rotated, redacted) and the one decoder of request bodies.

Example:

    token = token_from(config.token_file)          # $FLEET_CONSOLE_TOKEN or a 0600 file
    audit = AuditLog(run_dir / "audit.jsonl", secret=token)
    body = parse_body(raw)                         # a small flat JSON object, or BodyError
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TOKEN_ENV = "FLEET_CONSOLE_TOKEN"
MAX_JSON_DEPTH = 8  # a command's body is flat; deeper nesting is refused before parsing


class TokenError(ValueError):
    """The console's token file is missing, empty or readable by others."""


def token_from(token_file: str, environ: Mapping[str, str] | None = None) -> str:
    """`$FLEET_CONSOLE_TOKEN`, else the first line of `token_file` (readable by its owner only:
    0600 or stricter), else "" (none given).

        token = token_from("~/.fleet-token")
    """
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    if not token_file:
        return ""
    path = Path(token_file).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise TokenError(f"console.token_file {path}: {e.strerror or e}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"console.token_file {path} is readable by others (mode "
                         f"{stat.S_IMODE(mode):04o}): chmod 600 {path}")
    if not text:
        raise TokenError(f"console.token_file {path} is empty")
    return text.splitlines()[0]


class AuditLog:
    """Append-only JSON lines: one per operator action or refused request, flushed as written.

    Refusals are rate-limited per client (a token bucket; what it drops is counted and written
    with the client's next line), the file is rotated past `max_bytes` (two old files kept), and
    the token, if any, is replaced by `[redacted]` wherever it appears."""

    def __init__(self, path: Path, max_bytes: int = 8 * 1024**2, per_s: float = 5.0,
                 burst: float = 20.0, secret: str = "", keep: int = 2) -> None:
        self.path, self.max_bytes, self.per_s, self.burst, self.keep = (
            path, max_bytes, per_s, burst, keep)
        self._secrets = [s for s in {secret, json.dumps(secret)[1:-1]} if s]
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self.suppressed = 0  # refusals not written (over the rate)

    def append(self, who: str, client: str, what: dict[str, Any], result: str,
               status: int, refusal: bool = False) -> bool:
        """Write one line; a refusal over its client's rate is only counted (returns False)."""
        now = time.time()
        with self._lock:
            dropped = 0
            if refusal:
                tokens, last, dropped_before = self._buckets.pop(client, [self.burst, now, 0])
                tokens = min(self.burst, tokens + (now - last) * self.per_s)
                if tokens < 1:
                    self._buckets[client] = [tokens, now, dropped_before + 1]
                    self.suppressed += 1
                    self._trim()
                    return False
                self._buckets[client] = [tokens - 1, now, 0]
                dropped = int(dropped_before)
                self._trim()
            line = {"time": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
                    "unix": now, "who": who, "client": client, "what": what, "result": result,
                    "status": status}
            if dropped:
                line["suppressed_before"] = dropped  # this client's refusals not written
            text = json.dumps(clean(line)) + "\n"
            for s in self._secrets:
                text = text.replace(s, "[redacted]")
            self._rotate(len(text))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(text)
            return True

    def _trim(self) -> None:
        while len(self._buckets) > 4096:  # clients remembered (the oldest are forgotten)
            self._buckets.popitem(last=False)

    def _rotate(self, adding: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + adding <= self.max_bytes:
            return
        for i in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            if newer.exists():
                newer.replace(older)


def clean(x: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    return x


class BodyError(ValueError):
    """A request body that is not a small flat JSON object (the console's only decoder error)."""


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 15:
        raise BodyError("integers in a command have at most 15 digits")
    return int(text)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A command body: a JSON object, at most `MAX_JSON_DEPTH` deep, integers of at most 15 digits,
    finite numbers. Raises only `BodyError`."""
    if not raw.strip():
        return {}
    depth = deepest = 0
    quoted = escaped = False
    for byte in raw:  # nesting is counted before json.loads could recurse into it
        if quoted:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:  # double quote
            quoted = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise BodyError(f"the body nests deeper than {MAX_JSON_DEPTH}")

    def no_constant(name: str) -> Any:
        raise BodyError(f"{name} is not a number a command takes")

    try:
        body = json.loads(raw, parse_int=_small_int, parse_constant=no_constant)
    except BodyError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BodyError("the body is not JSON") from e
    if not isinstance(body, dict):
        raise BodyError("the body must be a JSON object")
    if not all(math.isfinite(v) for v in _floats(body)):
        raise BodyError("numbers must be finite")
    return body


def _floats(x: Any) -> list[float]:
    if isinstance(x, float):
        return [x]
    if isinstance(x, dict):
        return [f for v in x.values() for f in _floats(v)]
    if isinstance(x, list):
        return [f for v in x for f in _floats(v)]
    return []
