import pytest

from fleet.config import Config, ConfigError, from_mapping, load_config


def test_defaults_compose_into_typed_config():
    cfg = load_config([])
    assert isinstance(cfg, Config)
    assert cfg.robot.task == "push-v3" and cfg.fleet.num_robots == 4
    assert cfg.algorithm.ppo.clip == 0.2 and cfg.learner.batch_calls == 1024


def test_experiment_and_overrides():
    cfg = load_config(["experiment=smoke", "run.name=abc", "learner.max_staleness=5"])
    assert cfg.run.name == "abc" and cfg.fleet.num_robots == 2 and cfg.learner.max_staleness == 5


@pytest.mark.parametrize("overrides, message", [
    (["learner.bogus=1"], "bogus"),
    (["not_a_group=3"], "not_a_group"),
    (["experiment=nope"], "nope"),
    (["learner.batch_calls=abc"], "batch_calls"),
    (["learner.batch_calls=0"], "batch_calls"),
    (["buffer.fsync=sometimes"], "fsync"),
    (["robot.task=fly-v3"], "fly-v3"),
    (["fleet.outbox_linger_s=-0.1"], r"fleet\.outbox_linger_s must be in \[0, 5\] seconds"),
    (["fleet.outbox_linger_s=60"], r"fleet\.outbox_linger_s must be in \[0, 5\] seconds"),
    (["==="], ""),
])
def test_bad_overrides_give_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_unknown_nested_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"learner\.'oops'|'oops'"):
        from_mapping(Config, {"learner": {"oops": 1}})


def test_chunk_batching_is_a_fleet_key_that_reaches_each_robot(tmp_path):
    from fleet.run.pretrain import policy_config
    from fleet.run.train import robot_launches

    assert load_config([]).fleet.outbox_linger_s == 0.25  # on by default
    cfg = load_config(["fleet.outbox_linger_s=0", "fleet.num_robots=2"])
    launches = robot_launches(cfg, tmp_path, policy_config(cfg), 0)
    assert [launch.outbox_linger_s for launch in launches] == [0.0, 0.0]
