"""The `fleet` command.

    fleet train [hydra overrides]      the main job (see README)
    fleet train -m run.seed=0,1,2      a Hydra sweep: one run per point, in turn
    fleet pretrain [hydra overrides]   only build (or load) the BC base and measure it
    fleet bench NAME [--quick]         a benchmark; prints one JSON line last
    fleet buffer info PATH             what a buffer directory holds
    fleet buffer import SRC --out BUF  .npz episodes or a LeRobot dataset, as demonstrations
    fleet data import SRC --out BUF    the same (a LeRobot v3/v2.x dataset with mp4 videos)
    fleet data export RUN --format lerobot|npz OUT   a run's episodes (docs/buffer-format.md)
    fleet reward-eval reward=NAME buffer=PATH   a reward model against labelled episodes
    fleet robot run|gateway ...        the real-robot bridge (docs/protocol.md)
    fleet keys ROBOT_ID...             CURVE keys for the gateway and each robot
    fleet status [--url URL]           the robots, from a running fleet's console
    fleet intervene ROBOT|all CMD ...  pause|resume|estop|arm|reset|label success|label failure|
                                       say "..."|takeover on|off (docs/console.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from rich.console import Console

from fleet.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("train", "post-train a policy on a fleet of robots"),
                       ("pretrain", "build (or load) the BC base policy and measure it")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=smoke")
        if name == "train":
            sp.add_argument("-m", "--multirun", action="store_true",
                            help="a Hydra sweep (run.seed=0,1,2): one run per point, in turn")
    bp = sub.add_parser("bench", help="run a benchmark; its last line is JSON")
    bp.add_argument("name")
    bp.add_argument("--quick", action="store_true", help="a version under a minute")
    bp.add_argument("--half-open", type=int, default=0, metavar="N",
                    help="estop_latency: hold N slow/half-open connections to the console")
    buf = sub.add_parser("buffer", help="inspect, check or export a replay buffer directory")
    buf.add_argument("action", choices=["info", "verify", "export", "import"],
                     help="info: counts; verify: damage, changing nothing; export: episodes "
                          "as .npz files; import: a folder of .npz episodes or a LeRobot "
                          "dataset (PATH) into the buffer --out, as demonstrations")
    buf.add_argument("path")
    buf.add_argument("--out", help="export: the folder to write episodes to; import: the "
                                   "buffer to add them to (made if missing)")
    buf.add_argument("--horizon", type=int, default=4,
                     help="import: H, the policy calls' length the chunks are cut into")
    buf.add_argument("--chunk-steps", type=int, default=64,
                     help="import: steps per rollout chunk (at most)")
    re_ = sub.add_parser("reward-eval", help="score a reward model on a buffer's labelled episodes")
    re_.add_argument("overrides", nargs="*", help="reward=NAME buffer=PATH [out=FILE]")
    from fleet.data_cli import add_data_parser
    from fleet.robot_cli import add_keys_parser, add_robot_parser

    add_data_parser(sub)

    add_robot_parser(sub)
    add_keys_parser(sub)
    for name, text in (("status", "the robots, as a running fleet's console sees them"),
                       ("intervene", "an operator command to a robot (or all) of a running fleet")):
        op = sub.add_parser(name, help=text)
        if name == "intervene":
            op.add_argument("robot", help="a robot id, or all")
            op.add_argument("cmd", help="pause resume estop arm reset label say takeover")
            op.add_argument("words", nargs="*", help="success|failure, the sentence, on|off")
        op.add_argument("--url", default=os.environ.get("FLEET_CONSOLE_URL",
                                                        "http://127.0.0.1:8750"))
        op.add_argument("--token-file", default="",
                        help="a file (chmod 600) holding the console's token; else "
                             "$FLEET_CONSOLE_TOKEN (never on the command line: ps shows it)")
    return p


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="gymnasium")
    args = _parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "train":
            return _train(args.overrides, args.multirun, console)
        elif args.command == "pretrain":
            from fleet.run.evaluate import pretrain_and_measure

            pretrain_and_measure(load_config(args.overrides), console)
        elif args.command == "bench":
            from bench import run_bench

            options = {"half_open": args.half_open} if args.half_open else {}
            print(json.dumps(run_bench(args.name, args.quick, **options)))
        elif args.command == "buffer" and args.action == "import":
            from fleet.data_cli import import_demos

            return import_demos(Path(args.path), args.out, args.horizon, args.chunk_steps,
                                console)
        elif args.command == "data":
            from fleet import data_cli

            return data_cli.main(args, console)
        elif args.command == "buffer":
            return _buffer(args.action, Path(args.path), args.out, console)
        elif args.command == "reward-eval":
            from fleet.run.reward_eval import main as reward_eval

            return reward_eval(args.overrides)
        elif args.command in ("status", "intervene"):
            return _console(args, console)
        elif args.command in ("robot", "keys"):
            from fleet import robot_cli

            return robot_cli.main(args)
    except ConfigError as e:
        from rich.markup import escape  # a message's own [brackets] (fleet[lerobot]) are text

        console.print(f"[bold red]config error:[/] {escape(str(e))}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _train(overrides: list[str], multirun: bool, console: Console) -> int:
    """`fleet train`, or with `-m` one run per point of a Hydra sweep (`fleet.run.sweep`)."""
    from fleet.run.sweep import run_sweep, sweep_overrides

    sweeps = sweep_overrides(overrides)
    if sweeps and not multirun:  # said before the job's imports (ray, torch) are paid for
        raise ConfigError(f"{sweeps[0]} is a sweep: run one run per value with "
                          f"fleet train -m {' '.join(overrides)} (or quote a value that "
                          f"holds commas: key='a,b')")
    from fleet.run.train import train

    if not multirun:
        train(load_config(overrides), console)
        return 0
    summaries = run_sweep(overrides, lambda cfg: train(cfg, console), console.print)
    for s in summaries:
        console.print(f"{s['run']}: seed {s['seed']}, success {s['success_before']:.0%} -> "
                      f"{s['success_after']:.0%}")
    return 0


def _console(args: argparse.Namespace, console: Console) -> int:
    """`fleet status` and `fleet intervene` over the console's HTTP API."""
    import getpass
    import urllib.error

    from rich.markup import escape

    from actors.control import CommandError
    from fleet.console.client import intervene, request, status_table
    from fleet.console.server import ConsoleConfig, TokenError, read_token

    try:
        token = read_token(ConsoleConfig(token_file=args.token_file))
        if args.command == "status":
            code, reply = request(args.url, "GET", "/api/robots", token=token)
        else:
            code, reply = intervene(args.url, args.robot, args.cmd, args.words, token,
                                    f"cli:{getpass.getuser()}")
    except (CommandError, TokenError) as e:
        console.print(f"[bold red]{escape(str(e))}[/]", highlight=False)
        return 2
    except (urllib.error.URLError, OSError) as e:
        console.print(f"[bold red]no console at {escape(args.url)}: "
                      f"{escape(str(getattr(e, 'reason', e)))}[/]")
        return 1
    if code != 200:
        console.print(f"[bold red]{code}: {escape(str(reply.get('error')))}[/]",
                      highlight=False)
        return 1
    if args.command == "status":
        console.print(status_table(reply))
    else:
        print(json.dumps(reply))
    return 0


def _buffer(action: str, path: Path, out: str | None, console: Console) -> int:
    from buffers.episodes import export_npz
    from buffers.shards import ShardedBuffer, open_buffer
    from buffers.verify import verify_buffer

    if not path.is_dir():
        console.print(f"[bold red]no buffer at {path}[/]")
        return 2
    if action == "verify":  # reads only: a torn tail is reported, not truncated
        report = verify_buffer(path)
        print(json.dumps(report, indent=2))
        damage = ("corrupt_records", "unreadable_records", "torn_bytes")
        return 1 if any(report[k] for k in damage) else 0
    buf = open_buffer(path, read_only=True)  # never truncate beside a live writer
    try:
        if action == "info":
            print(json.dumps(buf.info(), indent=2, default=str))
        else:
            if out is None:
                console.print("[bold red]export needs --out FOLDER[/]")
                return 2
            shards = buf.shards if isinstance(buf, ShardedBuffer) else [buf]
            n = sum(export_npz(shard, Path(out)) for shard in shards)  # robots never share one
            console.print(f"wrote {n} episodes to {out}")
    finally:
        buf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
