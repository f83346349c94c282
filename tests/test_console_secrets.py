"""Secrets stay out of the run: the console's token (from the environment or a 0600 file) is in no
file under the run directory, wandb's included, nor in any process's command line or in the
environment Ray's workers get; run names stay under run.dir; bridge key files are born 0600."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.config import ConfigError, load_config
from fleet.console.client import request
from fleet.console.server import ConsoleConfig, TokenError, read_token
from tests.util import wait_for

ROOT = Path(__file__).resolve().parents[1]


def session_pids(sid: int) -> list[int]:
    """The processes of one session (the job and everything it started: Ray, its workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getsid(int(d.name)) == sid:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.timeout(300)
def sigint_default() -> None:
    """In the job, before exec: Ctrl-C as a terminal gives it. A test run started in the
    background of a non-interactive shell inherits SIGINT ignored, and Python keeps an ignored
    SIGINT ignored, so the job would never see the test's interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_token_is_nowhere_in_the_run(tmp_path):
    token = "tok-" + secrets.token_urlsafe(24)
    log = tmp_path / "train.log"
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="200", FLEET_CONSOLE_TOKEN=token,
               WANDB_MODE="offline")
    with log.open("w") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "train", "experiment=smoke", "run.name=secret",
             f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/cache",
             "console.port=0", "console.host=0.0.0.0", "logger.wandb=offline",
             "logger.live=false", "train.env_steps=100000000", "train.max_wall_s=300"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=sigint_default)
    run = tmp_path / "runs" / "secret"
    try:
        found: list[str] = []

        def console_up() -> bool:
            found[:] = re.findall(r"operator console: (http://\S+)", log.read_text())
            assert job.poll() is None, log.read_text()[-3000:]
            return bool(found)

        assert wait_for(console_up, timeout_s=400, poll_s=0.2), log.read_text()[-3000:]
        url = found[0].split("#", 1)[0]
        assert f"#token={token}" in found[0]  # the token it was given, not a generated one
        assert request(url, "GET", "/api/robots")[0] == 401
        assert request(url, "GET", f"/api/robots?token={token}", operator=token)[0] == 401

        def stepping() -> bool:
            status, view = request(url, "GET", "/api/robots", token=token)
            return status == 200 and all((r.get("env_steps") or 0) > 0 for r in view["robots"])

        assert wait_for(stepping, timeout_s=400, poll_s=0.5)  # the robots answer once built
        assert request(url, "POST", "/api/robots/robot-0/say", {"text": "x"}, token=token,
                       operator="ada")[0] == 200
        pids = session_pids(job.pid)
        assert len(pids) > 3  # the driver, Ray's processes, the robots' workers
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue  # ended meanwhile
            assert token.encode() not in cmdline, pid
            if pid != job.pid:  # the driver was started with it; what it starts is not
                assert token.encode() not in environ, (pid, cmdline[:200])
        assert wait_for(lambda: any((run / "wandb").rglob("*.wandb")), timeout_s=60)
        os.killpg(job.pid, signal.SIGINT)  # the driver closes wandb and the console, and exits
        job.wait(120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGINT)
            try:
                job.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run / "audit.jsonl").exists()
    leaks = [p for p in files if token.encode() in p.read_bytes()]
    assert leaks == []
    assert "[redacted]" in (run / "audit.jsonl").read_text()  # the refused ?token= request


def test_a_token_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    path.chmod(0o644)
    with pytest.raises(TokenError, match="readable by others"):
        read_token(ConsoleConfig(token_file=str(path)), environ={})
    path.chmod(0o600)
    assert read_token(ConsoleConfig(token_file=str(path)), environ={}) == "s3cret-token"
    assert read_token(ConsoleConfig(token_file=str(path)),
                      environ={"FLEET_CONSOLE_TOKEN": "from-env"}) == "from-env"
    with pytest.raises(TokenError, match="No such file"):
        read_token(ConsoleConfig(token_file=str(tmp_path / "none")), environ={})


def test_the_token_is_refused_on_the_command_line():
    with pytest.raises(ConfigError, match="FLEET_CONSOLE_TOKEN"):
        load_config(["console.token=hunter2"])


@pytest.mark.parametrize("override", ["run.name=../escape", "run.name=/tmp/x", "run.name=..",
                                      "run.name=${oc.env:HOME}", "run.name=a/b",
                                      "run.name=.hidden", "resume=../other"])
def test_run_names_stay_under_run_dir(override):
    with pytest.raises(ConfigError, match=r"one plain folder name under run\.dir"):
        load_config([override])


def test_a_symlinked_run_name_is_refused(tmp_path):
    from fleet.run.train import open_run

    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere")
    cfg = load_config(["run.name=link", f"run.dir={tmp_path}/runs"])
    with pytest.raises(ConfigError, match=r"outside run\.dir"):
        open_run(cfg)
    assert not (tmp_path / "elsewhere" / "config.json").exists()


def test_config_json_holds_no_token(tmp_path):
    import dataclasses
    import json

    from fleet.run.train import open_run

    cfg = load_config(["run.name=r", f"run.dir={tmp_path}"])
    cfg = dataclasses.replace(cfg, console=dataclasses.replace(cfg.console, token="in-process"))
    _, run_dir, _ = open_run(cfg)
    assert "in-process" not in (run_dir / "config.json").read_text()
    assert json.loads((run_dir / "config.json").read_text())["console"]["token"] == ""


def test_key_files_are_born_private(tmp_path):
    import zmq
    import zmq.auth

    from actors.bridge.keys import make_keys

    old = os.umask(0)  # the widest umask: modes come from os.open/mkdir alone
    try:
        written = make_keys(tmp_path / "keys", ["arm-0"])
    finally:
        os.umask(old)
    keys = tmp_path / "keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert (keys / "robots").stat().st_mode & 0o777 == 0o700
    for p in written:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o600 if p.name.endswith("key_secret") else 0o644), (p, oct(mode))
    public, secret = zmq.auth.load_certificate(str(keys / "robots" / "arm-0.key_secret"))
    assert secret is not None and zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(str(keys / "robots" / "arm-0.key"))[0] == public
    assert sorted(p.name for p in keys.rglob("*")) == [
        "arm-0.key", "arm-0.key_secret", "robots", "server.key", "server.key_secret"]
