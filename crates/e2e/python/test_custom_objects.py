"""The official Python client with a CustomResourceDefinition: the CRD through
ApiextensionsV1Api, its objects through CustomObjectsApi (create, get, list, merge patch,
status, watch, delete). Prints "all checks passed" at the end."""

import json
import os
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
ns = os.environ["SKIFF_NS"]
group = "py.example.com"
plural = "pywidgets"
name = f"{plural}.{group}"

crd = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": name},
    "spec": {
        "group": group,
        "scope": "Namespaced",
        "names": {"plural": plural, "singular": "pywidget", "kind": "PyWidget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "maximum": 10},
                        "color": {"type": "string", "default": "red"},
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                },
            }},
        }],
    },
}
ext = client.ApiextensionsV1Api()
ext.create_custom_resource_definition(crd)
deadline = time.time() + 30
while True:
    got = ext.read_custom_resource_definition(name)
    conditions = {c.type: c.status for c in (got.status.conditions or [])}
    if conditions.get("Established") == "True":
        break
    assert time.time() < deadline, f"not established: {conditions}"
    time.sleep(0.2)
assert got.status.accepted_names.kind == "PyWidget", got.status.accepted_names

# Aggregated discovery lists the new group, whichever form of the Accept header asks.
raw = client.ApiClient()


def get(path, accept):
    """A GET of `path` with this Accept header: (Content-Type, parsed body)."""
    request = raw.param_serialize(method="GET", resource_path=path,
                                  header_params={"Accept": accept},
                                  auth_settings=["BearerToken"])
    response = raw.call_api(*request)
    response.read()
    return response.getheader("Content-Type"), json.loads(response.data)


for accept in [
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
]:
    content_type, document = get("/apis", accept)
    assert "g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList" in content_type, content_type
    groups = [item["metadata"]["name"] for item in document["items"]]
    assert group in groups, groups
    versions = [v["version"] for item in document["items"] if item["metadata"]["name"] == group
                for v in item["versions"]]
    assert versions == ["v1"], versions
_, legacy = get("/apis", "application/json")
assert legacy["kind"] == "APIGroupList", legacy["kind"]
assert group in [g["name"] for g in legacy["groups"]], legacy

api = client.CustomObjectsApi()
body = {"apiVersion": f"{group}/v1", "kind": "PyWidget", "metadata": {"name": "a"},
        "spec": {"size": 3}}
created = api.create_namespaced_custom_object(group, "v1", ns, plural, body)
assert created["spec"] == {"size": 3, "color": "red"}, created

try:
    api.create_namespaced_custom_object(group, "v1", ns, plural, {
        "apiVersion": f"{group}/v1", "kind": "PyWidget", "metadata": {"name": "big"},
        "spec": {"size": 11}})
    raise AssertionError("size 11 was accepted")
except ApiException as e:
    assert e.status == 422, e
    assert "spec.size in body should be less than or equal to 10" in e.body, e.body

listed = api.list_namespaced_custom_object(group, "v1", ns, plural)
assert listed["kind"] == "PyWidgetList", listed["kind"]
assert [i["metadata"]["name"] for i in listed["items"]] == ["a"], listed

patched = api.patch_namespaced_custom_object(group, "v1", ns, plural, "a", {"spec": {"size": 4}})
assert patched["spec"]["size"] == 4, patched
status = api.patch_namespaced_custom_object_status(group, "v1", ns, plural, "a",
                                                   {"status": {"ready": True}})
assert status["status"] == {"ready": True}, status

w = watch.Watch()
seen = []
for event in w.stream(api.list_namespaced_custom_object, group, "v1", ns, plural,
                      timeout_seconds=5):
    seen.append((event["type"], event["object"]["metadata"]["name"]))
    if len(seen) == 1:
        # As upstream's custom resource storage: a Status, not the object.
        deleted = api.delete_namespaced_custom_object(group, "v1", ns, plural, "a")
        assert deleted["kind"] == "Status" and deleted["status"] == "Success", deleted
    if event["type"] == "DELETED":
        w.stop()
assert seen == [("ADDED", "a"), ("DELETED", "a")], seen

ext.delete_custom_resource_definition(name)
print("all checks passed")
