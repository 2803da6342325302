"""Turn a CustomResourceDefinition's openAPIV3Schema into a JSON Schema file for `make k8s-check`.

    python scripts/crd_to_jsonschema.py CRD.yaml OUT_DIR --source "kedacore/keda v2.20.2"

Writes one `<kind>-<group>-<version>.json` per served version. Objects that list their
properties refuse others (`additionalProperties: false`), as `kubectl apply`'s strict field
validation does on a cluster; the Kubernetes extensions (`x-kubernetes-*`) are kept, JSON Schema
ignores them, except `x-kubernetes-int-or-string`, which becomes an integer-or-string type.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("crd", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--source", required=True, help="Where the CRD came from, and its version.")
    args = parser.parse_args()
    for crd in yaml.safe_load_all(args.crd.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            schema = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$comment": f"{kind}.{group}/{version['name']} from {args.source} "
                f"({args.crd.name}), by scripts/crd_to_jsonschema.py",
                **schema,
            }
            name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
            path = args.out_dir / name
            path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(path)


if __name__ == "__main__":
    main()
