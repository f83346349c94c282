"""CURVE key files for the bridge: the gateway's pair and one pair per robot.

Example:

    make_keys(Path("keys"), ["arm-0", "arm-1"])       # `fleet keys arm-0 arm-1 --dir keys`
    allow = load_allowlist(Path("keys"))              # {public key: robot id}, for the gateway
"""

from __future__ import annotations

from pathlib import Path

import zmq.auth


def make_keys(folder: Path, robot_ids: list[str], force: bool = False) -> list[Path]:
    """The gateway's key pair once, and one per robot under robots/. Returns the files written.

    The gateway needs server.key_secret and robots/*.key (its allowlist); a robot needs
    server.key and its own robots/<id>.key_secret. Secret files are readable by the owner only.
    """
    written: list[Path] = []
    for sub, name in [(folder, "server"), *((folder / "robots", r) for r in robot_ids)]:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"bad robot id {name!r}")
        if (sub / f"{name}.key").exists() and not (force or name == "server"):
            raise FileExistsError(f"{sub / name}.key exists (pass --force to replace it)")
        if name == "server" and (sub / "server.key").exists() and not force:
            continue
        sub.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.auth.create_certificates(str(sub), name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    return written


def load_allowlist(folder: Path) -> dict[bytes, str]:
    """robots/<id>.key files -> {public key (Z85): robot id}."""
    allow = {}
    for path in sorted((folder / "robots").glob("*.key")):
        public, _ = zmq.auth.load_certificate(str(path))
        allow[public] = path.stem
    return allow
