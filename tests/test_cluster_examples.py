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


# KubeRay's RayJob CRD (ray-operator/config/crd/bases/ray.io_rayjobs.yaml, apiVersion ray.io/v1)
# does not ship with any package installed here, and a test cannot fetch it. This is the part of
# it a manifest can get wrong, written out by hand from that CRD: the fields RayJobSpec,
# RayClusterSpec, HeadGroupSpec and WorkerGroupSpec declare (unknown ones are refused, as
# `kubectl apply` does with strict field validation), their types, what each requires, and that
# rayStartParams is a map of strings. Pod templates are checked only as far as containers,
# volumes and mounts.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_POD_TEMPLATE = {
    "type": "object", "required": ["spec"],
    "properties": {"metadata": {"type": "object"}, "spec": {
        "type": "object", "required": ["containers"],
        "properties": {
            "containers": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "image": {"type": "string"},
                               "volumeMounts": {"type": "array", "items": {
                                   "type": "object", "required": ["mountPath", "name"]}}}}},
            "volumes": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"persistentVolumeClaim": {
                    "type": "object", "required": ["claimName"]}}}}}}}}
_GROUP = {"rayStartParams": _STR_MAP, "template": _POD_TEMPLATE, "labels": _STR_MAP,
          "resources": _STR_MAP}
RAYJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": {
            "type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}}},
        "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "activeDeadlineSeconds": {"type": "integer"}, "backoffLimit": {"type": "integer"},
                "clusterSelector": _STR_MAP, "deletionStrategy": {"type": "object"},
                "entrypoint": {"type": "string"}, "entrypointNumCpus": {"type": "number"},
                "entrypointNumGpus": {"type": "number"}, "entrypointResources": {"type": "string"},
                "jobId": {"type": "string"}, "managedBy": {"type": "string"},
                "metadata": _STR_MAP, "preRunningDeadlineSeconds": {"type": "integer"},
                "runtimeEnvYAML": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "submissionMode": {"type": "string"}, "submitterConfig": {"type": "object"},
                "submitterPodTemplate": {"type": "object"}, "suspend": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer"},
                "rayClusterSpec": {
                    "type": "object", "required": ["headGroupSpec"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object", "required": ["template"],
                            "properties": {**_GROUP, "serviceType": {"type": "string"},
                                           "enableIngress": {"type": "boolean"}}},
                        "workerGroupSpecs": {"type": "array", "items": {
                            "type": "object",
                            "required": ["groupName", "maxReplicas", "minReplicas", "template"],
                            "properties": {**_GROUP, "groupName": {"type": "string"},
                                           "replicas": {"type": "integer"},
                                           "minReplicas": {"type": "integer", "minimum": 0},
                                           "maxReplicas": {"type": "integer", "minimum": 0},
                                           "numOfHosts": {"type": "integer"},
                                           "idleTimeoutSeconds": {"type": "integer"},
                                           "suspend": {"type": "boolean"}}}}}}}}}}


def test_rayjob_matches_the_fields_kuberays_rayjob_crd_declares():
    import jsonschema

    _, job = rayjob()
    jsonschema.validate(job, RAYJOB_SCHEMA)
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= \
            group["maxReplicas"], group["groupName"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert isinstance(env, dict) and "working_dir" in env
    # the schema can fail: a number where KubeRay wants a string is refused
    bad = yaml.safe_load(yaml.safe_dump(job))
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    try:
        jsonschema.validate(bad, RAYJOB_SCHEMA)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the RayJob schema accepted an integer rayStartParams value")


def test_rayjob_entrypoint_is_a_fleet_train_command_line_fleet_accepts():
    from fleet.config import load_config

    _, job = rayjob()
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["fleet", "train"]
    cfg = load_config(words[2:])  # an unknown key or a bad value raises ConfigError
    assert cfg.run.dir == "/data/runs" and cfg.pretrain.cache_dir.startswith(cfg.run.dir + "/")
