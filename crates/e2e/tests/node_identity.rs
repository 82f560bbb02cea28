//! Nodes join with their own identities, as upstream's TLS bootstrapping gives them: the
//! node token's bootstrap token may only ask for certificates; the controller manager
//! approves and signs the kubelet's and the proxy's; a kubelet then reaches only what
//! belongs to its node (Node authorizer, NodeRestriction). Also upstream's conformance
//! steps for the CertificateSigningRequest API itself. Keys and requests are made with
//! the `openssl` command, not with Skiff's own code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use skiff_e2e::{eventually, kubectl_as, kubectl_as_with_input, Server};

/// One control plane (API server, scheduler, controller manager) for every test here.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start_control_plane(&[]))
}

/// The bootstrap token inside the server's node token (`K10<hash>::<id>.<secret>`).
fn bootstrap_token(server: &Server) -> String {
    let token = std::fs::read_to_string(server.data_dir.path().join("node-token"))
        .expect("the server writes DATA_DIR/node-token");
    let (_, bootstrap) = token.trim().split_once("::").expect("K10<hash>::<token>");
    bootstrap.to_string()
}

/// Runs `openssl req` for a new EC key `<dir>/<name>.key` with `extra` arguments, writing
/// `<dir>/<name>.<extension>`; returns the key's path and that file's text.
fn openssl_req(dir: &Path, name: &str, extension: &str, extra: &[&str]) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let output = dir.join(format!("{name}.{extension}"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&output)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        key,
        std::fs::read_to_string(&output).expect("openssl's output"),
    )
}

/// A new EC key and a PEM request for `subject` (`/O=group/CN=user`), in `dir`.
fn key_and_request(dir: &Path, name: &str, subject: &str) -> (PathBuf, String) {
    openssl_req(dir, name, "csr", &["-new", "-subj", subject])
}

/// A new EC key and a self-signed PEM certificate for `subject`, in `dir`.
fn self_signed(dir: &Path, name: &str, subject: &str) -> (PathBuf, String) {
    openssl_req(dir, name, "crt", &["-x509", "-days", "1", "-subj", subject])
}

fn csr_manifest(name: &str, request_pem: &str, signer: &str) -> String {
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n  usages: [digital signature, client auth]\n"
    )
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_as(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kubectl as the user of `kubeconfig` and asserts it is refused saying `expected`.
fn assert_refused(kubeconfig: &Path, args: &[&str], expected: &str) {
    let refused = kubectl_refused(kubeconfig, args);
    assert!(
        refused.contains(expected),
        "kubectl {}: {refused}",
        args.join(" ")
    );
}

/// `kubectl auth whoami` as the user of `kubeconfig`: its name and groups.
fn who_is(kubeconfig: &Path) -> String {
    kubectl_ok(
        kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    )
}

fn kubectl_refused(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_as(kubeconfig, args);
    assert!(
        !out.status.success(),
        "kubectl {} should have been refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubectl create -f -` of `manifest` as the user of `kubeconfig`.
fn create_as(kubeconfig: &Path, manifest: &str) -> std::process::Output {
    kubectl_as_with_input(kubeconfig, &["create", "-f", "-"], Some(manifest))
}

/// Creates a CSR as `requester` and waits for its certificate.
fn issued_certificate(server: &Server, requester: &Path, manifest: &str, name: &str) -> String {
    let out = create_as(requester, manifest);
    assert!(
        out.status.success(),
        "creating CSR {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encoded = eventually(
        &format!("CSR {name} approved and issued"),
        Duration::from_secs(30),
        || {
            let text = server.ok(&["get", "csr", name, "-o", "jsonpath={.status.certificate}"]);
            (!text.trim().is_empty()).then(|| text.trim().to_string())
        },
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 certificate");
    String::from_utf8(pem).expect("PEM certificate")
}

/// Patches a pod's status (a message) with kube-rs, as the user of `kubeconfig`.
fn patch_pod_status_as(kubeconfig: &Path, namespace: &str, pod: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, namespace);
        let patch = serde_json::json!({"status": {"message": format!("written by {pod}'s node")}});
        pods.patch_status(pod, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// A kubeconfig acting with a client certificate and key.
fn certificate_kubeconfig(server: &Server, name: &str, cert_pem: &str, key: &Path) -> PathBuf {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let key_pem = std::fs::read(key).expect("key");
    server.user_kubeconfig(
        name,
        &format!(
            "client-certificate-data: {}\nclient-key-data: {}",
            encode(cert_pem.as_bytes()),
            encode(&key_pem)
        ),
    )
}

#[test]
fn a_node_bootstraps_its_identity_and_reaches_only_what_its_pods_use() {
    let server = server();
    let dir = tempfile::tempdir().expect("temp dir");
    let token = bootstrap_token(server);
    let bootstrap = server.token_kubeconfig("bootstrap", &token);
    let id = token.split('.').next().expect("token id");

    // The bootstrap token is somebody, but may do nothing but ask for certificates.
    let whoami = who_is(&bootstrap);
    assert_eq!(
        whoami,
        format!("system:bootstrap:{id} [\"system:bootstrappers\",\"system:bootstrappers:skiff:node-token\",\"system:authenticated\"]")
    );
    assert_refused(
        &bootstrap,
        &["get", "secrets", "-n", "kube-system"],
        &format!("User \"system:bootstrap:{id}\" cannot list resource \"secrets\""),
    );

    // A kubelet client certificate: approved by the controller manager, then signed.
    let (key, request) = key_and_request(dir.path(), "n1", "/O=system:nodes/CN=system:node:n1");
    let certificate = issued_certificate(
        server,
        &bootstrap,
        &csr_manifest(
            "node-csr-n1",
            &request,
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        "node-csr-n1",
    );
    let csr = server.json(&["csr", "node-csr-n1"]);
    assert_eq!(
        csr["spec"]["username"],
        format!("system:bootstrap:{id}"),
        "the requester is recorded"
    );
    let approved = &csr["status"]["conditions"][0];
    assert_eq!(
        (approved["type"].as_str(), approved["reason"].as_str()),
        (Some("Approved"), Some("AutoApproved"))
    );
    let n1 = certificate_kubeconfig(server, "n1", &certificate, &key);
    let whoami = who_is(&n1);
    assert_eq!(
        whoami,
        "system:node:n1 [\"system:nodes\",\"system:authenticated\"]"
    );

    // A client certificate claiming system:masters is refused outright; a kubelet
    // request with an extra group is never approved.
    let (_, masters) = key_and_request(dir.path(), "m", "/O=system:masters/CN=mallory");
    let refused = create_as(
        &bootstrap,
        &csr_manifest("masters", &masters, "kubernetes.io/kube-apiserver-client"),
    );
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"), "{message}");

    // The node's world: its pod and the secret that pod uses; another node's pod and
    // secret.
    let ns = server.namespace("nodeauth");
    server.ok(&[
        "create",
        "secret",
        "generic",
        "mine",
        "-n",
        &ns,
        "--from-literal=k=v",
    ]);
    server.ok(&[
        "create",
        "secret",
        "generic",
        "theirs",
        "-n",
        &ns,
        "--from-literal=k=v",
    ]);
    for (pod, node, secret) in [("p1", "n1", "mine"), ("p2", "n2", "theirs")] {
        server.ok_with_input(
            &["create", "-n", &ns, "-f", "-"],
            &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {node}\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: {secret}\n"),
        );
    }
    let node_yaml = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n");
    let own = create_as(&n1, &node_yaml("n1"));
    assert!(
        own.status.success(),
        "a kubelet registers its own node: {}",
        String::from_utf8_lossy(&own.stderr)
    );
    let other = create_as(&n1, &node_yaml("n2"));
    let message = String::from_utf8_lossy(&other.stderr);
    assert!(
        message.contains("node \"n1\" is not allowed to modify node \"n2\""),
        "{message}"
    );

    assert_eq!(
        kubectl_ok(
            &n1,
            &[
                "get",
                "secret",
                "mine",
                "-n",
                &ns,
                "-o",
                "jsonpath={.data.k}"
            ]
        ),
        "dg=="
    );
    assert_refused(&n1, &["get", "secret", "theirs", "-n", &ns], &format!("secrets \"theirs\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\": no relationship found between node 'n1' and this object"));
    assert_refused(
        &n1,
        &["get", "secrets", "-n", &ns],
        "can only get individual resources of this type",
    );

    // Its own pods only: listed by node, read one by one.
    assert_refused(
        &n1,
        &["get", "pods", "-A"],
        "can only list/watch pods with spec.nodeName field selector",
    );
    let mine = kubectl_ok(
        &n1,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=n1",
            "-o",
            "name",
        ],
    );
    assert_eq!(mine.trim(), "pod/p1");
    kubectl_ok(&n1, &["get", "pod", "p1", "-n", &ns]);
    assert_refused(
        &n1,
        &["get", "pod", "p2", "-n", &ns],
        "no relationship found between node 'n1' and this object",
    );

    // It writes the status of its own pods, and deletes only those.
    // (A kubelet patches status without reading it first, as kube-rs does; kubectl's
    // `--subresource=status` would read `pods/status`, which no kubelet may.)
    patch_pod_status_as(&n1, &ns, "p1").expect("a kubelet writes its own pod's status");
    let refused = patch_pod_status_as(&n1, &ns, "p2").expect_err("not another node's pod");
    assert!(
        refused.contains(
            "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        ),
        "{refused}"
    );
    // Tokens only for its own pods' service accounts, bound to those pods.
    let token = kubectl_ok(
        &n1,
        &[
            "create",
            "token",
            "default",
            "-n",
            &ns,
            "--bound-object-kind=Pod",
            "--bound-object-name=p1",
        ],
    );
    assert!(!token.trim().is_empty());
    assert_refused(
        &n1,
        &[
            "create",
            "token",
            "default",
            "-n",
            &ns,
            "--bound-object-kind=Pod",
            "--bound-object-name=p2",
        ],
        "node requested token bound to a pod scheduled on a different node",
    );
    assert_refused(
        &n1,
        &["create", "token", "default", "-n", &ns],
        "node requested token not bound to a pod",
    );
    assert_refused(
        &n1,
        &["delete", "pod", "p2", "-n", &ns],
        "node \"n1\" can only delete pods with spec.nodeName set to itself",
    );
    assert_eq!(
        server
            .ok(&["get", "pod", "p2", "-n", &ns, "-o", "name"])
            .trim(),
        "pod/p2"
    );

    // Its own lease only; no labels that would place restricted workloads on it.
    let lease = |name: &str| {
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n")
    };
    assert!(create_as(&n1, &lease("n1")).status.success());
    let other = create_as(&n1, &lease("n2"));
    assert!(String::from_utf8_lossy(&other.stderr)
        .contains("can only access leases with the same name as the requesting node"));
    assert_refused(
        &n1,
        &[
            "label",
            "node",
            "n1",
            "node-restriction.kubernetes.io/trusted=yes",
        ],
        "node \"n1\" is not allowed to modify labels: node-restriction.kubernetes.io/trusted",
    );
    kubectl_ok(&n1, &["label", "node", "n1", "skiff.example/zone=a"]);
    assert_refused(
        &n1,
        &["delete", "namespace", &ns],
        "User \"system:node:n1\" cannot delete resource \"namespaces\"",
    );
}

#[test]
fn the_proxy_identity_reads_services_and_endpoints_but_no_secrets() {
    let server = server();
    let dir = tempfile::tempdir().expect("temp dir");
    let bootstrap = server.token_kubeconfig("bootstrap-proxy", &bootstrap_token(server));
    let (key, request) = key_and_request(dir.path(), "proxy", "/CN=system:kube-proxy");
    let certificate = issued_certificate(
        server,
        &bootstrap,
        &csr_manifest("proxy-csr", &request, "kubernetes.io/kube-apiserver-client"),
        "proxy-csr",
    );
    let proxy = certificate_kubeconfig(server, "proxy", &certificate, &key);
    kubectl_ok(&proxy, &["get", "endpointslices", "-A"]);
    kubectl_ok(&proxy, &["get", "services", "-A"]);
    kubectl_ok(&proxy, &["get", "networkpolicies", "-A"]);
    assert_refused(
        &proxy,
        &["get", "secrets", "-A"],
        "User \"system:kube-proxy\" cannot list resource \"secrets\"",
    );
    assert_refused(
        &proxy,
        &["create", "namespace", "proxy-made"],
        "cannot create resource \"namespaces\"",
    );

    // Any other name through the same signer is not approved by the controller manager.
    let (_, request) = key_and_request(dir.path(), "other", "/CN=someone-else");
    let manifest = csr_manifest("other-csr", &request, "kubernetes.io/kube-apiserver-client");
    server.ok_with_input(&["create", "-f", "-"], &manifest);
    std::thread::sleep(Duration::from_secs(2));
    let conditions = server.ok(&[
        "get",
        "csr",
        "other-csr",
        "-o",
        "jsonpath={.status.conditions}",
    ]);
    assert!(
        conditions.trim().is_empty(),
        "left for an administrator: {conditions}"
    );
    // An administrator approves it with kubectl, and the signer issues it.
    server.ok(&["certificate", "approve", "other-csr"]);
    eventually("the approved CSR signed", Duration::from_secs(30), || {
        let text = server.ok(&[
            "get",
            "csr",
            "other-csr",
            "-o",
            "jsonpath={.status.certificate}",
        ]);
        (!text.trim().is_empty()).then_some(())
    });
    let condition = server.ok(&[
        "get",
        "csr",
        "other-csr",
        "-o",
        "jsonpath={.status.conditions[0].reason}",
    ]);
    assert_eq!(condition, "KubectlApprove");
}

/// Upstream's "CertificateSigningRequest API" conformance steps, with kube-rs: discovery;
/// create, get, list and watch by signer; patch and update; `approval` read, patched and
/// updated; `status` read, patched with a certificate and updated; delete and delete a
/// collection.
#[test]
fn csr_api_operations() {
    use futures::StreamExt;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
    };
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
    use kube::core::WatchEvent;

    let server = server();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, request) = key_and_request(dir.path(), "e2e", "/CN=e2e.example.com");
    let (_, certificate) = self_signed(dir.path(), "e2e.example.com", "/CN=e2e.example.com");
    let signer = format!("example.com/e2e-{}", std::process::id());
    let template: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "e2e-example-csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": signer,
            "expirationSeconds": 3600,
            "usages": ["digital signature", "key encipherment", "server auth"],
        },
    }))
    .expect("a CSR");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = server.client().await;
        let discovery = kube::discovery::Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        assert!(discovery.has_group("certificates.k8s.io"));
        let resources: Vec<String> = client
            .list_api_group_resources("certificates.k8s.io/v1")
            .await
            .expect("the group version's resources")
            .resources
            .into_iter()
            .map(|r| r.name)
            .collect();
        for name in [
            "certificatesigningrequests",
            "certificatesigningrequests/approval",
            "certificatesigningrequests/status",
        ] {
            assert!(resources.iter().any(|r| r == name), "{name} in {resources:?}");
        }

        let csrs: Api<CertificateSigningRequest> = Api::all(client);
        for _ in 0..2 {
            csrs.create(&PostParams::default(), &template).await.expect("create");
        }
        let created = csrs.create(&PostParams::default(), &template).await.expect("create");
        let name = created.metadata.name.clone().expect("a generated name");
        let gotten = csrs.get(&name).await.expect("get");
        assert_eq!(gotten.metadata.uid, created.metadata.uid);
        assert_eq!(gotten.spec.expiration_seconds, Some(3600));
        let by_signer = ListParams::default().fields(&format!("spec.signerName={signer}"));
        let listed = csrs.list(&by_signer).await.expect("list");
        assert_eq!(listed.items.len(), 3);
        let version = listed.metadata.resource_version.clone().expect("a list version");
        let mut watch = csrs
            .watch(&WatchParams::default().fields(&format!("metadata.name={name}")), &version)
            .await
            .expect("watch")
            .boxed();

        let patched = csrs
            .patch(&name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"patched": "true"}}})))
            .await
            .expect("patch");
        let mut to_update = patched.clone();
        to_update
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("updated".into(), "true".into());
        let updated = csrs.replace(&name, &PostParams::default(), &to_update).await.expect("update");
        assert_eq!(updated.metadata.annotations.as_ref().and_then(|a| a.get("updated")).map(String::as_str), Some("true"));
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = watch.next().await {
                if let Ok(WatchEvent::Modified(csr)) = event {
                    if csr.metadata.annotations.as_ref().and_then(|a| a.get("patched")).is_some() {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "the watch saw the patched annotation");

        let approval = csrs.get_subresource("approval", &name).await.expect("get approval");
        assert_eq!(approval.metadata.uid, created.metadata.uid);
        let patched = csrs
            .patch_subresource(
                "approval",
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {"patchedapproval": "true"}},
                    "status": {"conditions": [{"type": "ApprovalPatch", "status": "True", "reason": "e2e"}]},
                })),
            )
            .await
            .expect("patch approval");
        let conditions = patched.status.clone().and_then(|s| s.conditions).unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "ApprovalPatch");
        assert_eq!(patched.metadata.annotations.as_ref().and_then(|a| a.get("patchedapproval")).map(String::as_str), Some("true"));
        let mut to_approve = patched.clone();
        to_approve.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new).push(
            CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("E2E".into()),
                message: Some("Set from an e2e test".into()),
                ..Default::default()
            },
        );
        let approved = csrs
            .replace_subresource("approval", &name, &PostParams::default(), &to_approve)
            .await
            .expect("update approval");
        let conditions = approved.status.clone().and_then(|s| s.conditions).unwrap_or_default();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1].type_, "Approved");

        let status = csrs.get_status(&name).await.expect("get status");
        assert_eq!(status.metadata.uid, created.metadata.uid);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&certificate);
        let patched = csrs
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {"patchedstatus": "true"}},
                    "status": {"certificate": encoded},
                })),
            )
            .await
            .expect("patch status");
        let issued = patched.status.clone().and_then(|s| s.certificate).expect("certificate");
        assert_eq!(issued.0, certificate.as_bytes());
        assert_eq!(patched.metadata.annotations.as_ref().and_then(|a| a.get("patchedstatus")).map(String::as_str), Some("true"));
        let mut to_update = patched.clone();
        let conditions = to_update.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
        conditions.push(CertificateSigningRequestCondition {
            type_: "StatusUpdate".into(),
            status: "True".into(),
            reason: Some("E2E".into()),
            message: Some("Set from an e2e test".into()),
            ..Default::default()
        });
        let wanted = conditions.len();
        let updated = csrs.replace_status(&name, &PostParams::default(), &to_update).await.expect("update status");
        let conditions = updated.status.and_then(|s| s.conditions).unwrap_or_default();
        assert_eq!(conditions.len(), wanted);
        assert_eq!(conditions.last().map(|c| c.type_.as_str()), Some("StatusUpdate"));

        csrs.delete(&name, &DeleteParams::default()).await.expect("delete");
        let gone = csrs.get(&name).await.expect_err("deleted");
        assert!(matches!(gone, kube::Error::Api(ref status) if status.code == 404), "{gone}");
        assert_eq!(csrs.list(&by_signer).await.expect("list").items.len(), 2);
        csrs.delete_collection(&DeleteParams::default(), &by_signer).await.expect("delete a collection");
        assert_eq!(csrs.list(&by_signer).await.expect("list").items.len(), 0);
    });
}

/// Bootstrap tokens an administrator makes (as `kubeadm token create` does) work until
/// they expire; a client certificate from another CA gets nowhere.
#[test]
fn bootstrap_tokens_expire_and_foreign_certificates_are_refused() {
    let server = server();
    let secret = |id: &str, expiration: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {id}\n  token-secret: 0123456789abcdef\n  usage-bootstrap-authentication: \"true\"\n  expiration: \"{expiration}\"\n"
        )
    };
    server.ok_with_input(
        &["create", "-f", "-"],
        &secret("fresh1", "2099-01-01T00:00:00Z"),
    );
    server.ok_with_input(
        &["create", "-f", "-"],
        &secret("stale1", "2020-01-01T00:00:00Z"),
    );
    let fresh = server.token_kubeconfig("fresh", "fresh1.0123456789abcdef");
    let whoami = kubectl_ok(
        &fresh,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(whoami, "system:bootstrap:fresh1");
    for (name, token) in [
        ("stale", "stale1.0123456789abcdef"),
        ("wrong-secret", "fresh1.0123456789abcdee"),
    ] {
        let kubeconfig = server.token_kubeconfig(name, token);
        assert_refused(&kubeconfig, &["get", "namespaces"], "Unauthorized");
    }

    // A certificate for system:masters, signed by a CA of the attacker's own.
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, certificate) = self_signed(dir.path(), "mallory", "/O=system:masters/CN=mallory");
    let mallory = certificate_kubeconfig(server, "mallory", &certificate, &key);
    // The TLS handshake itself fails (the certificate does not verify against the CA):
    // kubectl reports a bad certificate or a closed connection, never an answer.
    let refused = kubectl_refused(&mallory, &["get", "secrets", "-A"]);
    let transport_failure = [
        "tls: unknown certificate",
        "tls: bad certificate",
        "broken pipe",
        "connection reset",
        // Go's HTTP/2 client when the handshake it began with fails.
        "client conn could not be established",
    ]
    .iter()
    .any(|said| refused.contains(said));
    assert!(
        transport_failure && !refused.contains("Error from server"),
        "{refused}"
    );
}

/// Upstream's "PodCertificateRequest API operations" steps: the kind in discovery, then
/// upstream's generic resource test (`Resource::crud`): created, read, listed, its labels
/// updated and patched with every patch type, its status written with an issued
/// certificate, deleted one by one and as a collection; its spec never changes.
#[test]
fn pod_certificate_requests_through_the_api_verbs() {
    use serde_json::json;
    use skiff_e2e::api::{Case, Resource};
    let server = server();
    let ns = server.namespace("pcr");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, request) = key_and_request(dir.path(), "pcr", "/CN=pod");
    let (_, certificate) = self_signed(dir.path(), "issued", "/CN=e2e.example.com");
    // The request's DER is the PEM's base64 body; JSON carries bytes as base64.
    let der_base64: String = request
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let discovery = server.ok(&[
        "api-resources",
        "--api-group=certificates.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        discovery.contains("podcertificaterequests.certificates.k8s.io"),
        "{discovery}"
    );
    let initial = json!({"spec": {
        "signerName": format!("example.com/e2e-{ns}"),
        "podName": "test-pod",
        "podUID": "12345678-1234-1234-1234-123456789012",
        "serviceAccountName": "default",
        "serviceAccountUID": "12345678-1234-1234-1234-123456789013",
        "nodeName": "test-node",
        "nodeUID": "12345678-1234-1234-1234-123456789014",
        "maxExpirationSeconds": 86400,
        "stubPKCS10Request": der_base64,
    }});
    let status = json!({
        "certificateChain": certificate,
        "notBefore": "2026-01-01T00:00:00Z",
        "notAfter": "2026-01-01T01:00:00Z",
        "beginRefreshAt": "2026-01-01T00:15:00Z",
        "conditions": [{"type": "Issued", "status": "True", "reason": "E2E", "message": "Issued by E2E test", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    fn relabel(object: &mut serde_json::Value) {
        object["metadata"]["labels"]["test.podcertificaterequest.example.com"] = json!("test");
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = server.client().await;
        let requests = Resource::new(
            &client,
            "certificates.k8s.io/v1",
            "PodCertificateRequest",
            "podcertificaterequests",
            Some(&ns),
        );
        requests
            .crud(
                &ns,
                Case {
                    initial,
                    update: relabel,
                    status: Some(status),
                    patch: json!({"metadata": {"labels": {"test.podcertificaterequest.example.com": "test"}}}),
                    json_patch: json!([{"op": "add", "path": "/metadata/labels/test.podcertificaterequest.example.com", "value": "test"}]),
                },
            )
            .await;
    });

    // The spec is fixed once made, and must name its pod, account and node.
    let manifest = |node: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: PodCertificateRequest\nmetadata:\n  name: fixed\nspec:\n  signerName: example.com/e2e\n  podName: p\n  podUID: u1\n  serviceAccountName: default\n  serviceAccountUID: u2\n  nodeName: \"{node}\"\n  nodeUID: u3\n  stubPKCS10Request: {der_base64}\n"
        )
    };
    let refused = server.fails_with_input(&["create", "-n", &ns, "-f", "-"], &manifest(""));
    assert!(
        refused.contains("spec.nodeName: Required value"),
        "{refused}"
    );
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &manifest("n1"));
    let refused = server.fails(&[
        "patch",
        "podcertificaterequest",
        "fixed",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        "{\"spec\":{\"podName\":\"other\"}}",
    ]);
    assert!(refused.contains("field is immutable"), "{refused}");
}

/// The controller manager's controllers each act as their own service account, with only
/// their upstream role: the job controller may make pods but not delete namespaces; and
/// with those narrow rights the controllers still do their work.
#[test]
fn controllers_act_as_their_own_service_accounts() {
    let server = server();
    let accounts = server.ok(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for account in [
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "generic-garbage-collector",
        "certificate-controller",
    ] {
        assert!(
            accounts.contains(&format!("serviceaccount/{account}")),
            "{accounts}"
        );
    }
    let can = |account: &str, verb: &str, resource: &str| {
        let out = server.kubectl(&[
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            "default",
            &format!("--as=system:serviceaccount:kube-system:{account}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can("job-controller", "create", "pods"), "yes");
    assert_eq!(can("job-controller", "delete", "namespaces"), "no");
    assert_eq!(can("job-controller", "get", "secrets"), "no");
    assert_eq!(can("namespace-controller", "delete", "namespaces"), "yes");
    assert_eq!(
        can("deployment-controller", "create", "replicasets.apps"),
        "yes"
    );
    assert_eq!(can("deployment-controller", "delete", "pods"), "no");

    // A Deployment still gets its ReplicaSet and pods, and goes with them.
    let ns = server.namespace("controllers");
    server.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "-n",
        &ns,
    ]);
    eventually("the deployment's two pods", Duration::from_secs(30), || {
        let pods = server.ok(&["get", "pods", "-n", &ns, "-o", "name"]);
        (pods.lines().count() == 2).then_some(())
    });
    let revision = server.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(
        revision, "1",
        "the deployment controller annotated its revision"
    );
    server.ok(&["delete", "deployment", "web", "-n", &ns]);
    eventually(
        "the garbage collector to remove the pods",
        Duration::from_secs(30),
        || {
            server
                .ok(&["get", "replicasets,pods", "-n", &ns, "-o", "name"])
                .trim()
                .is_empty()
                .then_some(())
        },
    );
}
