"""The cluster examples as the tools that start them read them: `cluster.yaml` through Ray's
cluster-launcher validation (what `ray up` runs before touching a node), `rayjob.yaml` through
Ray's reading of a KubeRay cluster spec, plus the storage and dashboard each needs. No cluster
is started."""

import shlex
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "cluster"


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # as `ray up` does (commands._bootstrap_config)
    assert config["file_mounts"] == {"~/fleet": "."}  # what setup_commands install from
    head = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head  # else no worker starts
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        shlex.split(command)  # each one is a whole shell command (quotes balanced)


def rayjob() -> tuple[dict, dict]:
    claim, job = yaml.safe_load_all((EXAMPLES / "rayjob.yaml").read_text())
    assert (claim["kind"], job["kind"]) == ("PersistentVolumeClaim", "RayJob")
    return claim, job


def test_rayjob_cluster_spec_is_one_rays_kuberay_autoscaler_accepts():
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    _, job = rayjob()
    spec = job["spec"]["rayClusterSpec"]
    config = _derive_autoscaling_config_from_ray_cr(  # validates with Ray's schema too
        {"metadata": {"name": job["metadata"]["name"], "namespace": "default"}, "spec": spec})
    types = config["available_node_types"]
    assert types["learner"]["resources"]["GPU"] == 1
    assert types["robots"]["min_workers"] == 4
    # KubeRay's job submitter reaches the dashboard through the head's Service, not localhost.
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_rayjob_mounts_the_run_dir_on_every_pod_that_writes_it():
    """The driver and its buffer (head), the learner's checkpoints and robots' spill files
    must all land on one shared volume at the path the entrypoint's run.dir names."""
    claim, job = rayjob()
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    run_dir = next(arg.split("=", 1)[1] for arg in job["spec"]["entrypoint"].split()
                   if arg.startswith("run.dir="))
    spec = job["spec"]["rayClusterSpec"]
    groups = {"head": spec["headGroupSpec"]} | {g["groupName"]: g
                                                 for g in spec["workerGroupSpecs"]}
    for name, group in groups.items():
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])
                  if volumes.get(m["name"], {}).get("persistentVolumeClaim", {})
                  .get("claimName") == claim["metadata"]["name"]]
        assert any(run_dir.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), \
            f"{name} does not mount {claim['metadata']['name']} under run.dir={run_dir}"
