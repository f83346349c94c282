"""`fleet keys` and `fleet robot`: CURVE keys, the robot-side client and a bare gateway.

Example (on the fleet's side, then on the robot's computer):

    fleet keys arm-1 arm-2 --dir keys       # keys/server.key(+_secret), keys/robots/arm-1.key...
    fleet robot gateway --bind tcp://0.0.0.0:5555 --keys keys        # who is connected
    fleet robot run arm-1 --gateway tcp://fleet:5555 --server-key server.key \\
        --key arm-1.key_secret --gym InvertedPendulum-v5 --arm

`fleet robot run` imports only numpy, pyzmq, msgpack and lz4 (plus gymnasium for `--gym`); the
`fleet` entry point itself loads more, so a robot with nothing else installed runs
`python -m fleet.robot_cli run ...`. Without `--arm` the robot connects and stays e-stopped
until an operator types `arm` (`stop` latches the e-stop again, `quit` ends the run).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import zmq.auth

from actors.bridge.keys import load_allowlist, make_keys


def add_keys_parser(sub: Any) -> None:
    kp = sub.add_parser("keys", help="make CURVE keys: one for the gateway, one per robot")
    kp.add_argument("robot_ids", nargs="*", help="robots to make keys for")
    kp.add_argument("--dir", default="keys", help="folder for the keys (default: keys)")
    kp.add_argument("--force", action="store_true", help="replace keys that exist")


def add_robot_parser(sub: Any) -> None:
    rp = sub.add_parser("robot", help="the bridge: a robot-side client, or a bare gateway")
    rsub = rp.add_subparsers(dest="robot_command", required=True)
    run = rsub.add_parser("run", help="connect this robot to the fleet's gateway")
    run.add_argument("robot_id")
    run.add_argument("--gateway", required=True, help="tcp://host:port of the gateway")
    run.add_argument("--server-key", required=True, help="the gateway's public key file")
    run.add_argument("--key", required=True, help="this robot's .key_secret file")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--gym", metavar="ENV_ID", help="drive a gymnasium env (GymDriver)")
    which.add_argument("--driver", metavar="MODULE:CLASS", help="your Driver subclass")
    which.add_argument("--metaworld", metavar="TASK",
                       help="drive a simulated Meta-World robot (e.g. push-v3; needs metaworld)")
    run.add_argument("--hz", type=float, default=50.0,
                     help="control rate for --gym and --metaworld")
    run.add_argument("--execution", choices=("step", "chunk"), default=None,
                     help="chunk: ask for each policy call's whole action chunk and run it open "
                          "loop at the control rate; step: one action per round trip (default: "
                          "the driver's spec, step for --gym and --metaworld)")
    run.add_argument("--arm", action="store_true", help="release the e-stop at start")
    run.add_argument("--console", action="store_true",
                     help="read operator words on stdin: arm, stop (e-stop), quit (on by "
                          "default when stdin is a terminal)")
    run.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")
    gw = rsub.add_parser("gateway", help="serve robots with no policy; prints who is connected")
    gw.add_argument("--bind", default="tcp://127.0.0.1:5555")
    gw.add_argument("--keys", default="keys", help="the folder `fleet keys` wrote")
    gw.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")


def _load_pair(path: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def _driver(args: argparse.Namespace) -> Any:
    driver = _make_driver(args)
    if args.execution is not None:  # what the robot asks for at `register`
        driver.spec = dataclasses.replace(driver.spec, execution=args.execution)
    return driver


def _make_driver(args: argparse.Namespace) -> Any:
    from actors.bridge.client import GymDriver

    if args.gym:
        return GymDriver(args.gym, control_hz=args.hz)
    if args.metaworld:
        from actors.bridge.sim_driver import metaworld_driver

        return metaworld_driver(args.metaworld, args.hz)
    module, _, name = args.driver.partition(":")
    return getattr(importlib.import_module(module), name)()


def _until(seconds: float, stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if seconds > 0:
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True  # a run ended early (a signal, `quit`) must not wait for it
        timer.start()


def operator(client: Any, stop: threading.Event, lines: Iterable[str]) -> None:
    """The operator's console: `arm` releases the e-stop (queued chunks are dropped), `stop`
    latches it, `quit` ends the run holding still. Arming is only ever local, never remote.

        operator(client, stop, sys.stdin)       # in a thread, until stdin closes
    """
    for line in lines:
        word = line.strip().lower()
        if word == "arm":
            client.arm()
        elif word in ("stop", "estop", "e"):
            client.estop("operator console")
        elif word in ("quit", "exit", "q"):
            stop.set()
            return
        elif word:
            print(f"unknown {word!r}: arm, stop or quit", file=sys.stderr, flush=True)


def run_robot(args: argparse.Namespace) -> int:
    from actors.bridge.client import BridgeClient, ClientConfig

    public, secret = _load_pair(args.key)
    server_public, _ = zmq.auth.load_certificate(args.server_key)
    client = BridgeClient(_driver(args), ClientConfig(args.robot_id, args.gateway, server_public,
                                                      public, secret))
    if args.arm:
        client.arm()
    stop = threading.Event()
    _until(args.seconds, stop)
    if args.console or sys.stdin.isatty():
        threading.Thread(target=operator, args=(client, stop, sys.stdin), daemon=True).start()
    try:
        client.run(stop)  # holds still on the way out
    finally:
        client.driver.close()
    print(json.dumps({"robot_id": args.robot_id, **vars(client.stats)}))
    return 0


def run_gateway(args: argparse.Namespace) -> int:
    from actors.bridge.gateway import Gateway, GatewayConfig

    folder = Path(args.keys)
    keys = _load_pair(str(folder / "server.key_secret"))
    allow = load_allowlist(folder)
    stop = threading.Event()
    _until(args.seconds, stop)
    with Gateway(GatewayConfig(args.bind), keys, allow) as gateway:
        print(json.dumps({"endpoint": gateway.endpoint, "allowed": sorted(allow.values())}),
              flush=True)
        while not stop.wait(1.0):
            print(json.dumps({"robots": gateway.robots(), "stats": dict(gateway.stats)}),
                  flush=True)
        print(json.dumps({"robots": gateway.robots(), "stats": dict(gateway.stats)}), flush=True)
    return 0


def main(args: argparse.Namespace) -> int:
    """Dispatch `fleet keys` and `fleet robot ...` (parsed by fleet.cli or by `python -m`)."""
    if args.command == "keys":
        folder = Path(args.dir)
        for path in make_keys(folder, args.robot_ids, args.force):
            print(path)
        return 0
    if args.robot_command == "run":
        return run_robot(args)
    return run_gateway(args)


if __name__ == "__main__":  # a robot without the rest of fleet: python -m fleet.robot_cli run ...
    parser = argparse.ArgumentParser(prog="fleet-robot")
    commands = parser.add_subparsers(dest="command", required=True)
    add_keys_parser(commands)
    add_robot_parser(commands)
    sys.exit(main(parser.parse_args()))
