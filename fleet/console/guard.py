"""What keeps the console's secrets and inputs in bounds: where the token comes from, the audit
log (rate-limited, rotated, redacted). Request bodies are `fleet.console.bodies`'.

Example:

    token = token_from(config.token_file)          # $FLEET_CONSOLE_TOKEN or a 0600 file
    audit = AuditLog(run_dir / "audit.jsonl", secret=token)
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
