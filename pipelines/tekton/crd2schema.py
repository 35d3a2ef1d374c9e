"""One version's openAPIV3Schema of a CustomResourceDefinition, as a strict JSON Schema.

The same conversion as the schemas of ../../shared/crd-schemas (datree's openapi2jsonschema):
`additionalProperties: false` wherever an object lists its properties and does not preserve
unknown fields, `x-kubernetes-int-or-string` as integer-or-string, apiVersion and kind pinned.
Unknown fields then fail validation, as the API server's structural pruning would drop them.

    python crd2schema.py CRD.yaml VERSION OUT.json
"""

import json
import sys

import yaml


def strict(schema):
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {k: strict(v) for k, v in schema.items()}
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in schema):
        schema["additionalProperties"] = False
    return schema


def main() -> int:
    crd_path, version, out = sys.argv[1:4]
    with open(crd_path, encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = strict(v["schema"]["openAPIV3Schema"])
            schema["properties"]["apiVersion"]["enum"] = [f"{crd['spec']['group']}/{version}"]
            schema["properties"]["kind"]["enum"] = [crd["spec"]["names"]["kind"]]
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            with open(out, "w", encoding="utf-8") as f:
                json.dump(schema, f, indent=1, sort_keys=True)
            return 0
    sys.exit(f"crd2schema.py: {crd_path} has no version {version}")


if __name__ == "__main__":
    sys.exit(main())
