"""CURVE key files for the bridge: the gateway's pair and one pair per robot.

Example:

    make_keys(Path("keys"), ["arm-0", "arm-1"])       # `fleet keys arm-0 arm-1 --dir keys`
    allow = load_allowlist(Path("keys"))              # {public key: robot id}, for the gateway
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import zmq
import zmq.auth


def make_keys(folder: Path, robot_ids: list[str], force: bool = False) -> list[Path]:
    """The gateway's key pair once, and one per robot under robots/. Returns the files written.

    The gateway needs server.key_secret and robots/*.key (its allowlist); a robot needs
    server.key and its own robots/<id>.key_secret. Key folders are created 0700 and secret files
    0600 from the start (`os.open` with the mode: never readable by others, not even briefly);
    pyzmq's certificate format, so `zmq.auth.load_certificate` reads them.
    """
    written: list[Path] = []
    for sub, name in [(folder, "server"), *((folder / "robots", r) for r in robot_ids)]:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad robot id {name!r}")
        if (sub / f"{name}.key").exists() and not (force or name == "server"):
            raise FileExistsError(f"{sub / name}.key exists (pass --force to replace it)")
        if name == "server" and (sub / "server.key").exists() and not force:
            continue
        for d in (folder, sub):
            if not d.exists():
                d.mkdir(mode=0o700, parents=True)  # the umask can only narrow it
        if sub != folder:
            sub.chmod(0o700)  # robots/ is ours: also when it existed before
        public, secret = zmq.curve_keypair()
        now = datetime.datetime.now().isoformat(timespec="seconds")
        lines = f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
        _write(sub / f"{name}.key", f"#   ZeroMQ CURVE Public Certificate ({now})\n" + lines,
               0o644)
        _write(sub / f"{name}.key_secret",
               f"#   ZeroMQ CURVE **Secret** Certificate ({now}): keep it 0600\n" + lines
               + f'    secret-key = "{secret.decode()}"\n', 0o600)
        written += [sub / f"{name}.key", sub / f"{name}.key_secret"]
    return written


def _write(path: Path, text: str, mode: int) -> None:
    """Write `text` to a new file created with `mode` (replacing `path` whole, never in place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widens past `mode`
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_allowlist(folder: Path) -> dict[bytes, str]:
    """robots/<id>.key files -> {public key (Z85): robot id}."""
    allow = {}
    for path in sorted((folder / "robots").glob("*.key")):
        public, _ = zmq.auth.load_certificate(str(path))
        allow[public] = path.stem
    return allow
