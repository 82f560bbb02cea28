#!/usr/bin/env python3
"""Compares the list metadata Skiff publishes with upstream's: for every type both describe,
its `x-kubernetes-map-type`, and for each of its properties the
`x-kubernetes-patch-merge-key`, `-patch-strategy`, `-list-type`, `-list-map-keys` and
`-map-type` of Skiff's /openapi/v2 against those of upstream's v1.37 schemas
(shipped by the `kubernetes-validate` package that scripts/setup installs). Skiff's
strategic merge patch and server-side apply follow the same table its OpenAPI publishes,
so every difference printed is a list merged differently from upstream.

    KUBECONFIG=/tmp/skiff/admin.kubeconfig scripts/compare-list-metadata.py
"""
import glob
import json
import os
import subprocess
import sys

import kubernetes_validate

KEYS = ["x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy",
        "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type"]

schemas = glob.glob(os.path.join(os.path.dirname(kubernetes_validate.__file__),
                                 "kubernetes-json-schema", "v1.37.0*", "_definitions.json"))
if not schemas:
    sys.exit("no v1.37 schemas: pip install kubernetes-validate==1.37.0")
upstream = json.load(open(schemas[0]))["$defs"]
published = subprocess.run(["kubectl", "get", "--raw", "/openapi/v2"],
                           check=True, capture_output=True, text=True).stdout
skiff = json.loads(published)["definitions"]

annotated, differing = 0, []
for name, definition in sorted(upstream.items()):
    if name not in skiff:
        continue
    if definition.get(KEYS[-1]) != skiff[name].get(KEYS[-1]):
        differing.append((name, "(the type)", {KEYS[-1]: (definition.get(KEYS[-1]),
                                                         skiff[name].get(KEYS[-1]))}))
    for prop, theirs in sorted(definition.get("properties", {}).items()):
        ours = skiff[name].get("properties", {}).get(prop, {})
        annotated += any(k in theirs for k in KEYS)
        changed = {k: (theirs.get(k), ours.get(k)) for k in KEYS if theirs.get(k) != ours.get(k)}
        if changed:
            differing.append((name, prop, changed))
for name, prop, changed in differing:
    print(f"{name}.{prop}: " + ", ".join(f"{k[13:]} upstream {u!r}, skiff {s!r}"
                                           for k, (u, s) in changed.items()))
print(f"{len(differing)} properties differ (upstream annotates {annotated})")
