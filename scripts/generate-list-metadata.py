#!/usr/bin/env python3
"""Writes crates/apiserver/src/schema/builtin-v1.37.json: the type metadata of the built-in
kinds that strategic merge patch and server-side apply need, taken from upstream's v1.37
schemas (shipped by the `kubernetes-validate` package that scripts/setup installs).

For every definition reachable from a kind: whether it is one value
(`x-kubernetes-map-type`), and for each of its fields that is an object, a list or a map,
the definition it holds (`type`: the object's, the items' or the values'), and upstream's
`x-kubernetes-list-type` (`list`), `-list-map-keys` (`keys`), `-patch-strategy`
(`strategy`), `-patch-merge-key` (`mergeKey`) and `-map-type` (`mapType`); `map` marks a
free-form map (`additionalProperties`). Kinds are indexed by `group/version/Kind`.

    scripts/generate-list-metadata.py

`scripts/compare-list-metadata.py` checks what the server publishes against the same
schemas.
"""
import glob
import json
import os
import sys

import kubernetes_validate

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "apiserver", "src", "schema",
                   "builtin-v1.37.json")
REF = "#/$defs/"

schemas = glob.glob(os.path.join(os.path.dirname(kubernetes_validate.__file__),
                                 "kubernetes-json-schema", "v1.37.0*", "_definitions.json"))
if not schemas:
    sys.exit("no v1.37 schemas: pip install kubernetes-validate==1.37.0")
definitions = json.load(open(schemas[0]))["$defs"]


def target(schema):
    ref = schema.get("$ref", "")
    return ref[len(REF):] if ref.startswith(REF) else None


def field(prop):
    out = {}
    held = prop.get("items") or prop.get("additionalProperties") or prop
    if isinstance(held, dict) and target(held):
        out["type"] = target(held)
    if isinstance(prop.get("additionalProperties"), dict):
        out["map"] = True
    for key, name in [("x-kubernetes-list-type", "list"), ("x-kubernetes-list-map-keys", "keys"),
                      ("x-kubernetes-patch-strategy", "strategy"),
                      ("x-kubernetes-patch-merge-key", "mergeKey"),
                      ("x-kubernetes-map-type", "mapType")]:
        if key in prop:
            out[name] = prop[key]
    return out


kinds, types, pending = {}, {}, []
for name, definition in definitions.items():
    for gvk in definition.get("x-kubernetes-group-version-kind", []):
        group_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        kinds[f"{group_version}/{gvk['kind']}"] = name
        pending.append(name)
while pending:
    name = pending.pop()
    if name in types or name not in definitions:
        continue
    definition = definitions[name]
    fields = {p: f for p, f in ((p, field(v)) for p, v in definition.get("properties", {}).items()) if f}
    entry = {}
    if "x-kubernetes-map-type" in definition:
        entry["mapType"] = definition["x-kubernetes-map-type"]
    if fields:
        entry["fields"] = fields
    types[name] = entry
    pending.extend(f["type"] for f in fields.values() if "type" in f)

def lines(mapping):
    """One entry a line, so that a new upstream version reads as a short diff."""
    return ",\n".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'), sort_keys=True)}"
                       for k, v in sorted(mapping.items()))


with open(OUT, "w") as out:
    types = {k: v for k, v in types.items() if v}
    out.write(f'{{"kinds":{{\n{lines(kinds)}\n}},\n"types":{{\n{lines(types)}\n}}}}\n')
print(f"{OUT}: {len(kinds)} kinds, {len(types)} types")
