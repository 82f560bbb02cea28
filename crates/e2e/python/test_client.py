"""The official Kubernetes Python client against a running Skiff server.

Run by tests/python_client.rs with KUBECONFIG pointing at the server and SKIFF_NS naming
a namespace the test owns.
"""

import os
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main():
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = os.environ["SKIFF_NS"]

    # create
    for i in range(5):
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"py-{i}", labels={"set": "py", "i": str(i)}),
            data={"n": str(i)},
        )
        created = core.create_namespaced_config_map(ns, body)
        assert created.metadata.uid, "server assigns a uid"
        assert int(created.metadata.resource_version) > 0

    # list, with a selector and with pagination
    listed = core.list_namespaced_config_map(ns, label_selector="set=py")
    assert sorted(c.metadata.name for c in listed.items) == [f"py-{i}" for i in range(5)]
    page = core.list_namespaced_config_map(ns, limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = core.list_namespaced_config_map(ns, limit=10, _continue=page.metadata._continue)
    assert len(rest.items) == 3

    # typed objects of another group
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(ns, deployment)
    read = apps.read_namespaced_deployment("py-web", ns)
    assert read.spec.replicas == 2 and read.metadata.generation == 1

    # errors come back as ApiException with upstream's Status
    try:
        core.read_namespaced_config_map("missing", ns)
        raise AssertionError("expected 404")
    except ApiException as e:
        assert e.status == 404, e.status
        assert '"reason":"NotFound"' in e.body, e.body

    # watch from the list's resourceVersion sees later changes in order
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    seen = []

    def consume():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, ns, resource_version=start,
                              timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-w")))
    core.patch_namespaced_config_map("py-w", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("py-w", ns)
    t.join(15)
    assert seen == [("ADDED", "py-w"), ("MODIFIED", "py-w"), ("DELETED", "py-w")], seen

    # delete
    for i in range(5):
        core.delete_namespaced_config_map(f"py-{i}", ns)
    assert core.list_namespaced_config_map(ns, label_selector="set=py").items == []
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
