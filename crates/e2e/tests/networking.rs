//! Services and DNS on a real `skiff server`: real pods behind a Service, reached from
//! another pod through the service proxy's nftables rules by the Service's DNS names,
//! load-balanced over every ready backend; headless Services answered with pod IPs; a
//! NodePort reached from the host; backends that go stop being used; UDP through a
//! Service, and a UDP flow from a fixed port moved off a backend that went (its
//! conntrack entry cleared). Driven by the real kubectl; name lookups and requests are
//! busybox's `nslookup` and `nc` in the pods, UDP goes through agnhost's `/dial`.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::agnhost::{self, Dial, Dialed};
use skiff_e2e::{eventually, Server};

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";
const AGNHOST: &str = agnhost::IMAGE;

/// A field (`metadata.name`, `status.podIP`) of every `app=web` pod in `ns`.
fn web_pods(server: &Server, ns: &str, field: &str) -> BTreeSet<String> {
    let jsonpath = format!("jsonpath={{.items[*].{field}}}");
    server
        .ok(&["get", "pods", "-n", ns, "-l", "app=web", "-o", &jsonpath])
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// `kubectl exec POD -- sh -c SCRIPT` in `ns`: its stdout if it succeeded.
fn exec(server: &Server, ns: &str, pod: &str, script: &str) -> Option<String> {
    let out = server.kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One HTTP request to `host:port` with busybox's `nc` (its static `wget` crashes),
/// printing the body's last line, or `FAILED`.
fn http_get(host: &str, port: u16) -> String {
    format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | tail -n 1 | grep . || echo FAILED"
    )
}

/// The backends (pod names) that answer `count` requests to `host:port` from the client
/// pod.
fn backends_reached(
    server: &Server,
    ns: &str,
    host: &str,
    port: u16,
    count: usize,
) -> BTreeSet<String> {
    let request = http_get(host, port);
    let script = format!("for i in $(seq {count}); do {request}; done");
    let out = exec(server, ns, "client", &script).unwrap_or_default();
    out.lines().map(|l| l.trim().to_string()).collect()
}

/// The client pod's agnhost dials `host:port` over UDP `tries` times with `request`.
fn dial_udp(server: &Server, ns: &str, request: &str, host: &str, port: u16, tries: u32) -> Dialed {
    let dial = Dial {
        netexec_port: 8080,
        request,
        protocol: "udp",
        host,
        port,
        tries,
    };
    let answer = exec(server, ns, "client", &dial.script()).unwrap_or_default();
    agnhost::parse(&answer).unwrap_or_else(|| panic!("/dial answered {answer:?}"))
}

/// Asks `hostname` over UDP from a socket of the test (the host's network namespace,
/// so through the proxy's rules there) to `addr`; the answer, if one came within a
/// second.
fn udp_hostname(socket: &UdpSocket, addr: (&str, u16)) -> Option<String> {
    socket.send_to(b"hostname", addr).ok()?;
    let mut buffer = [0u8; 256];
    let (count, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..count]).into_owned())
}

/// The whole suite once per proxy mode, one cluster at a time (each programs this
/// machine's rules). The userspace mode relays connections itself, so the steps that
/// hold only when the kernel forwards the client's own packets are skipped there.
#[test]
fn services_reach_their_pods_by_name_and_address() {
    for mode in ["nftables", "iptables", "userspace"] {
        eprintln!("networking: proxy mode {mode}");
        services_in_proxy_mode(mode);
    }
}

fn services_in_proxy_mode(mode: &str) {
    let userspace = mode == "userspace";
    let server =
        Server::start_node_with(&["--proxy-mode", mode, "--service-lb-pool", "10.77.0.0/29"]);
    let ns = server.namespace("net");
    server.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {AGNHOST}
        # index.html names the pod; cgi-bin/peer echoes the address the request came from;
        # agnhost answers UDP on 8081.
        command: ["sh", "-c", "mkdir -p /www/cgi-bin && hostname > /www/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && {{ /agnhost netexec --http-port=9090 --udp-port=8081 & }} && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}, {{name: udp, containerPort: 8081, protocol: UDP}}]
        readinessProbe:
          tcpSocket: {{port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-udp, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: udp, port: 81, targetPort: udp, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-nodes, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb, namespace: {ns}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-local, namespace: {ns}}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-sticky, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  sessionAffinity: ClientIP
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-headless, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}, labels: {{role: client}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {AGNHOST}
    args: ["netexec", "--http-port=8080", "--udp-port=-1"]
"#
        ),
    );
    server.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        &ns,
        "--timeout=120s",
    ]);
    server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "-n",
        &ns,
        "--timeout=120s",
    ]);
    let pods = web_pods(&server, &ns, "metadata.name");
    assert_eq!(pods.len(), 2);

    // The pod's resolv.conf points at the cluster DNS with upstream's search path.
    let resolv = exec(&server, &ns, "client", "cat /etc/resolv.conf").expect("resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains(&format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local"
        )),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");

    // The Service's every name, through DNS and the proxy, reaches both backends.
    let cluster_ip = server.ok(&[
        "get",
        "service",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for name in [
        "web".to_string(),
        format!("web.{ns}"),
        format!("web.{ns}.svc.cluster.local"),
    ] {
        let reached = eventually(
            &format!("both backends through {name}"),
            Duration::from_secs(60),
            || {
                let reached = backends_reached(&server, &ns, &name, 80, 12);
                (reached == pods).then_some(reached)
            },
        );
        assert_eq!(reached, pods);
    }
    let looked_up = exec(
        &server,
        &ns,
        "client",
        &format!("nslookup web.{ns}.svc.cluster.local"),
    )
    .expect("nslookup");
    assert!(looked_up.contains(&cluster_ip), "{looked_up}");

    // Pods started after a Service get its variables (and the API server's).
    server.ok(&[
        "run",
        "env",
        "-n",
        &ns,
        "--image",
        IMAGE,
        "--restart=Never",
        "--",
        "env",
    ]);
    let env = eventually("the env pod's output", Duration::from_secs(60), || {
        let logs = server.kubectl(&["logs", "env", "-n", &ns]);
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        text.contains("WEB_SERVICE_HOST").then_some(text)
    });
    for expected in [
        format!("WEB_SERVICE_HOST={cluster_ip}"),
        "WEB_SERVICE_PORT=80".to_string(),
        "WEB_SERVICE_PORT_HTTP=80".to_string(),
        format!("WEB_PORT=tcp://{cluster_ip}:80"),
        format!("WEB_PORT_80_TCP=tcp://{cluster_ip}:80"),
        "WEB_PORT_80_TCP_PROTO=tcp".to_string(),
        "WEB_PORT_80_TCP_PORT=80".to_string(),
        format!("WEB_PORT_80_TCP_ADDR={cluster_ip}"),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".to_string(),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_string(),
        "KUBERNETES_PORT=tcp://10.96.0.1:443".to_string(),
        "KUBERNETES_PORT_443_TCP_PROTO=tcp".to_string(),
        "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1".to_string(),
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected} in {env}");
    }
    // Those variables lead to the API server: its Service's endpoint is an address pods
    // reach (a TCP connection; busybox speaks no TLS).
    let kubernetes = exec(
        &server,
        &ns,
        "client",
        "echo | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT >/dev/null && echo connected",
    );
    assert_eq!(kubernetes.as_deref().map(str::trim), Some("connected"));

    // A headless Service's name gives the pods' own addresses.
    let pod_ips = web_pods(&server, &ns, "status.podIP");
    let headless = exec(
        &server,
        &ns,
        "client",
        &format!("nslookup web-headless.{ns}.svc.cluster.local"),
    )
    .expect("nslookup headless");
    for ip in &pod_ips {
        assert!(headless.contains(ip.as_str()), "{ip} in {headless}");
    }
    assert!(!headless.contains(&cluster_ip), "{headless}");

    // ClientIP affinity pins the client to one backend, through the cluster IP and the
    // node port alike; switched off, both backends answer again; switched back on, one.
    // (16 requests: two backends would both be reached by chance all but 2 in 65,536
    // times.)
    let node_ip = server.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let sticky_port: u16 = server
        .ok(&[
            "get",
            "service",
            "web-sticky",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("node port");
    let reached_through_both = |count| {
        let by_cluster_ip = backends_reached(&server, &ns, "web-sticky", 80, count);
        let by_node_port = backends_reached(&server, &ns, &node_ip, sticky_port, count);
        [by_cluster_ip, by_node_port]
    };
    let set_affinity = |affinity: &str| {
        server.ok(&[
            "patch",
            "service",
            "web-sticky",
            "-n",
            &ns,
            "-p",
            &format!(r#"{{"spec": {{"sessionAffinity": "{affinity}"}}}}"#),
        ]);
    };
    for sticky in reached_through_both(16) {
        assert_eq!(sticky.len(), 1, "{sticky:?}");
        assert!(sticky.is_subset(&pods), "{sticky:?}");
    }
    set_affinity("None");
    eventually(
        "both backends once affinity is off",
        Duration::from_secs(30),
        || {
            reached_through_both(16)
                .iter()
                .all(|reached| *reached == pods)
                .then_some(())
        },
    );
    set_affinity("ClientIP");
    eventually(
        "one backend once affinity is back",
        Duration::from_secs(30),
        || {
            reached_through_both(16)
                .iter()
                .all(|reached| reached.len() == 1 && reached.is_subset(&pods))
                .then_some(())
        },
    );

    // Pod to pod through a Service is not masqueraded: the backend sees the client's IP.
    // (Not in userspace mode: there the proxy opens its own connection to the backend,
    // which sees the node's address, as behind upstream's userspace proxy.)
    let client_ip = server.ok(&[
        "get",
        "pod",
        "client",
        "-n",
        &ns,
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let peer = exec(
        &server,
        &ns,
        "client",
        "printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80 | tail -n 1",
    )
    .expect("request to cgi-bin/peer");
    // busybox httpd listens on IPv6 and writes IPv4 peers mapped: `[::ffff:10.88.0.3]`.
    let peer = peer
        .trim()
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']');
    if !userspace {
        assert_eq!(peer, client_ip);
    } else {
        assert_ne!(peer, client_ip);
    }

    // UDP: through the Service to both backends; to a pod directly, the pod sees the
    // client's own address.
    let udp_ip = server.ok(&[
        "get",
        "service",
        "web-udp",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually("both backends over UDP", Duration::from_secs(60), || {
        (dial_udp(&server, &ns, "hostname", &udp_ip, 81, 12).distinct() == pods).then_some(())
    });
    let pod_ip = pod_ips.iter().next().expect("a web pod IP");
    let seen = dial_udp(&server, &ns, "clientip", pod_ip, 8081, 1);
    assert_eq!(seen.errors, Vec::<String>::new());
    let (seen_ip, _) = seen.responses[0].rsplit_once(':').expect("ip:port");
    assert_eq!(seen_ip, client_ip);

    // A LoadBalancer Service gets an address from the pool, shown by kubectl get.
    let lb_ip = eventually("a load-balancer address", Duration::from_secs(30), || {
        let ip = server.ok(&[
            "get",
            "service",
            "web-lb",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.is_empty()).then_some(ip)
    });
    assert!(lb_ip.starts_with("10.77.0."), "{lb_ip}");
    let table = server.ok(&["get", "service", "web-lb", "-n", &ns]);
    assert!(table.contains(&lb_ip), "{table}");

    // From the host: the cluster IP, the node port and the load balancer's address.
    let node_port = server.ok(&[
        "get",
        "service",
        "web-nodes",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    // A Local load balancer's health-check port says this node has both endpoints.
    let check_port = server.ok(&[
        "get",
        "service",
        "web-local",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.healthCheckNodePort}",
    ]);
    let health = eventually(
        "the health check to count both endpoints",
        Duration::from_secs(30),
        || {
            let url = format!("http://{node_ip}:{check_port}/healthz");
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "3", &url])
                .output()
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            body.contains(r#""localEndpoints":2"#).then_some(body)
        },
    );
    assert!(health.contains(r#""name":"web-local""#), "{health}");

    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://{node_ip}:{node_port}/"),
        format!("http://{lb_ip}/"),
    ] {
        let body = eventually(
            &format!("{url} from the host"),
            Duration::from_secs(30),
            || {
                let out = Command::new("curl")
                    .args(["-sS", "--max-time", "3", &url])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            },
        );
        assert!(pods.contains(&body), "{url} answered {body:?}");
    }

    // NetworkPolicy: a default deny for the web pods blocks the client; a rule that lets
    // pods labelled role=client in opens the way again. Not in userspace mode: the web
    // pods see only the node's connections (the proxy's), which policies do not isolate
    // (the node reaches its pods for probes), so the client's own address is never there
    // to deny — the reason upstream's userspace proxy never worked with NetworkPolicy.
    if !userspace {
        network_policy_admits_only_clients(&server, &ns, &pods);
    }

    // Upstream's Service and EndpointSlice conformance steps, in the nftables run (they
    // exercise the Service machinery, not what differs between proxy modes).
    if mode == "nftables" {
        service_endpoint_steps(&server, &ns);
        endpoints_for_pods_matching_a_service(&server, &ns);
    }

    udp_flow_and_scale_down(&server, &ns, &pods, &udp_ip);
}

fn network_policy_admits_only_clients(server: &Server, ns: &str, pods: &BTreeSet<String>) {
    server.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-deny, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress]
"#
        ),
    );
    eventually(
        "the default deny to block the client",
        Duration::from_secs(30),
        || {
            let reached = backends_reached(server, ns, "web", 80, 2);
            (reached == BTreeSet::from(["FAILED".to_string()])).then_some(())
        },
    );
    server.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-allow-clients, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]
    ports: [{{port: http}}]
"#
        ),
    );
    eventually(
        "the allow rule to let the client in",
        Duration::from_secs(30),
        || (backends_reached(server, ns, "web", 80, 8) == *pods).then_some(()),
    );
    server.ok(&["delete", "networkpolicy", "--all", "-n", ns]);
}

fn udp_flow_and_scale_down(server: &Server, ns: &str, pods: &BTreeSet<String>, udp_ip: &str) {
    // A UDP flow keeps its source port, so conntrack keeps sending it to the backend
    // it first reached. When that backend goes, the proxy deletes the flow's entry and
    // the next datagram reaches a backend that is there (left alone, the entry would
    // outlive the pod for as long as the client keeps sending). In userspace mode the
    // flow is the proxy's session, moved when its endpoint goes.
    let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let first = eventually(
        "a UDP answer from the host",
        Duration::from_secs(30),
        || udp_hostname(&socket, (udp_ip, 81)),
    );
    assert!(pods.contains(&first), "{first} answered");
    assert_eq!(udp_hostname(&socket, (udp_ip, 81)).as_ref(), Some(&first));
    server.ok(&["delete", "pod", &first, "-n", ns, "--wait=false"]);
    let next = eventually(
        "the flow to reach another backend",
        Duration::from_secs(30),
        || udp_hostname(&socket, (udp_ip, 81)).filter(|name| *name != first),
    );
    assert!(next.starts_with("web-"), "{next}");

    // Scaled down to one: only the survivor answers.
    server.ok(&["scale", "deployment/web", "-n", ns, "--replicas=1"]);
    let survivor: BTreeSet<String> = eventually("one pod left", Duration::from_secs(60), || {
        let names = web_pods(server, ns, "metadata.name");
        (names.len() == 1).then_some(names)
    });
    eventually(
        "only the survivor answering",
        Duration::from_secs(30),
        || (backends_reached(server, ns, "web", 80, 6) == survivor).then_some(()),
    );

    // No ready backend at all: the connection is refused at once, not left to time out.
    server.ok(&["scale", "deployment/web", "-n", ns, "--replicas=0"]);
    eventually("refused without backends", Duration::from_secs(60), || {
        let started = Instant::now();
        let out = exec(
            server,
            ns,
            "client",
            "nc -w 5 web 80 </dev/null 2>&1; echo rc=$?",
        )?;
        (out.contains("rc=1") && started.elapsed() < Duration::from_secs(4)).then_some(())
    });
}

/// A pod of agnhost `serve-hostname` servers, one container per `(port, protocol)`
/// (HTTP for `http`, raw TCP for `tcp`, UDP for `udp`), each port named `p<port>`.
fn serving_pod(name: &str, labels: &str, servers: &[(u16, &str)]) -> String {
    let containers: Vec<String> = servers
        .iter()
        .map(|(port, kind)| {
            let (flags, protocol) = match *kind {
                "tcp" => ("\"--tcp\", \"--http=false\", ", "TCP"),
                "udp" => ("\"--udp\", \"--http=false\", ", "UDP"),
                _ => ("", "TCP"),
            };
            format!(
                r#"{{"name": "s{port}-{kind}", "image": "{AGNHOST}", "args": ["serve-hostname", {flags}"--port={port}"],
                  "ports": [{{"name": "p{port}", "containerPort": {port}, "protocol": "{protocol}"}}]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {labels}}},
  "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{}]}}}}"#,
        containers.join(", ")
    )
}

/// An Endpoints object's addresses and ports as `ip:port` strings, sorted.
fn endpoint_addresses(server: &Server, ns: &str, name: &str) -> Vec<String> {
    let endpoints = server.kubectl(&["get", "endpoints", name, "-n", ns, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&endpoints.stdout).unwrap_or_default();
    let mut out: Vec<String> = value["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|subset| {
            let ips: Vec<String> = subset["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str().map(str::to_string))
                .collect();
            let ports: Vec<i64> = subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64())
                .collect();
            ips.into_iter().flat_map(move |ip| {
                ports
                    .clone()
                    .into_iter()
                    .map(move |port| format!("{ip}:{port}"))
            })
        })
        .collect();
    out.sort();
    out
}

/// Upstream's "EndpointsController should create Endpoints for Pods matching a Service"
/// and "EndpointSlice should create Endpoints and EndpointSlices for Pods matching a
/// Service", with its pods and Services: `pod1` (port `example-name` 3000) and `pod2`
/// (`example-name` 3001, `other-port` 3002), real pods whether they serve or not (the
/// Services publish not-ready addresses); a Service on pod1 by number has one subset and
/// one slice with port 3000, one on both by the port's name has a subset and a slice per
/// port number, each address referring to its pod; slices deleted are made again.
fn endpoints_for_pods_matching_a_service(server: &Server, ns: &str) {
    let pod = |name: &str, label: &str, ports: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{label}: \"on\", shared12: \"on\"}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: container1\n    image: {AGNHOST}\n    command: [/agnhost, pause]\n    ports: [{ports}]\n---\n"
        )
    };
    let service = |name: &str, selector: &str, port: &str, target: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{{selector}: \"on\"}}\n  publishNotReadyAddresses: true\n  ports: [{{name: {port}, port: 80, targetPort: {target}, protocol: TCP}}]\n---\n"
        )
    };
    let manifest = [
        pod("pod1", "pod1", "{name: example-name, containerPort: 3000}"),
        pod(
            "pod2",
            "pod2",
            "{name: example-name, containerPort: 3001}, {name: other-port, containerPort: 3002}",
        ),
        service("example-int-port", "pod1", "example", "3000"),
        service("example-named-port", "shared12", "http", "example-name"),
    ]
    .concat();
    server.ok_with_input(&["apply", "-n", ns, "-f", "-"], &manifest);
    // What `kubectl get` prints, once there is something to get.
    let get = |args: &[&str]| {
        let out = server.try_ok(&[&["get", "-n", ns, "-o", "json"][..], args].concat())?;
        serde_json::from_str::<Value>(&out).ok()
    };
    // (name, IP, UID) of each pod, once it has an IP.
    let pods: Vec<(&str, String, String)> = ["pod1", "pod2"]
        .into_iter()
        .map(|name| {
            let pod = eventually(&format!("{name}'s IP"), Duration::from_secs(180), || {
                let pod = get(&["pod", name])?;
                pod["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| !ip.is_empty())
                    .then_some(pod)
            });
            let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
            (
                name,
                text(&pod["status"]["podIP"]),
                text(&pod["metadata"]["uid"]),
            )
        })
        .collect();
    // Each address is a pod's, and refers to it; the pod's name.
    let check_reference = |ip: &str, target: &Value| {
        let (name, _, uid) = pods
            .iter()
            .find(|(_, pod_ip, _)| pod_ip == ip)
            .unwrap_or_else(|| panic!("unexpected address {ip}"));
        assert_eq!(target["kind"], "Pod", "{target}");
        assert_eq!(target["name"], *name, "{target}");
        assert_eq!(target["namespace"], ns, "{target}");
        assert_eq!(target["uid"], uid.as_str(), "{target}");
        name.to_string()
    };
    // (pod, port) for each address of a group with one port named `port_name`: an
    // Endpoints subset or an EndpointSlice; `addresses` are (IP, target reference).
    let pods_on_port = |group: &Value, port_name: &str, addresses: Vec<(&Value, &Value)>| {
        let ports = group["ports"].as_array().cloned().unwrap_or_default();
        assert_eq!(ports.len(), 1, "{group}");
        assert_eq!(ports[0]["name"], port_name, "{group}");
        assert_eq!(ports[0]["protocol"], "TCP", "{group}");
        let port = ports[0]["port"].as_i64().unwrap_or(0);
        addresses
            .into_iter()
            .map(|(ip, target)| {
                (
                    check_reference(ip.as_str().unwrap_or_default(), target),
                    port,
                )
            })
            .collect::<Vec<_>>()
    };
    // The subsets, once there are `subsets` with `addresses` in all.
    let endpoints = |service: &str, subsets: usize, addresses: usize| {
        eventually(
            &format!("{service}'s Endpoints"),
            Duration::from_secs(120),
            || {
                let endpoints = get(&["endpoints", service])?;
                let found = endpoints["subsets"].as_array().cloned().unwrap_or_default();
                let count: usize = found
                    .iter()
                    .map(|s| {
                        s["addresses"].as_array().map_or(0, Vec::len)
                            + s["notReadyAddresses"].as_array().map_or(0, Vec::len)
                    })
                    .sum();
                (found.len() == subsets && count == addresses).then_some(found)
            },
        )
    };
    let by_port = |subsets: &[Value], port_name: &str| {
        let mut out: Vec<(String, i64)> = subsets
            .iter()
            .flat_map(|subset| {
                let addresses = ["addresses", "notReadyAddresses"]
                    .iter()
                    .flat_map(|kind| subset[*kind].as_array().into_iter().flatten())
                    .map(|a| (&a["ip"], &a["targetRef"]))
                    .collect();
                pods_on_port(subset, port_name, addresses)
            })
            .collect();
        out.sort();
        out
    };
    let single = endpoints("example-int-port", 1, 1);
    assert_eq!(by_port(&single, "example"), [("pod1".to_string(), 3000)]);
    let named = endpoints("example-named-port", 2, 2);
    assert_eq!(
        by_port(&named, "http"),
        [("pod1".to_string(), 3000), ("pod2".to_string(), 3001)]
    );

    // The same as EndpointSlices: a slice per port, each endpoint a pod's address.
    let slices = |service: &str, count: usize| {
        eventually(
            &format!("{service}'s EndpointSlices"),
            Duration::from_secs(60),
            || {
                let selector = format!("kubernetes.io/service-name={service}");
                let list = get(&["endpointslices", "-l", &selector])?;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let endpoints: usize = items
                    .iter()
                    .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
                    .sum();
                (items.len() == count && endpoints == count).then_some(items)
            },
        )
    };
    let slice_ports = |items: &[Value], port_name: &str| {
        let mut out: Vec<(String, i64)> = items
            .iter()
            .flat_map(|slice| {
                assert_eq!(slice["addressType"], "IPv4", "{slice}");
                let addresses = slice["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| (&e["addresses"][0], &e["targetRef"]))
                    .collect();
                pods_on_port(slice, port_name, addresses)
            })
            .collect();
        out.sort();
        out
    };
    let single = slices("example-int-port", 1);
    assert_eq!(
        slice_ports(&single, "example"),
        [("pod1".to_string(), 3000)]
    );
    let named = slices("example-named-port", 2);
    assert_eq!(
        slice_ports(&named, "http"),
        [("pod1".to_string(), 3000), ("pod2".to_string(), 3001)]
    );
    // Deleted, the slices are made again.
    server.ok(&[
        "delete",
        "endpointslices",
        "-n",
        ns,
        "-l",
        "kubernetes.io/service-name=example-named-port",
    ]);
    let remade = slices("example-named-port", 2);
    assert!(
        remade.iter().all(|s| named
            .iter()
            .all(|n| n["metadata"]["uid"] != s["metadata"]["uid"])),
        "the slices were not made again"
    );
    assert_eq!(
        slice_ports(&remade, "http"),
        [("pod1".to_string(), 3000), ("pod2".to_string(), 3001)]
    );
    server.ok(&[
        "delete",
        "-n",
        ns,
        "pod/pod1",
        "pod/pod2",
        "service/example-int-port",
        "service/example-named-port",
        "--wait=false",
    ]);
}

/// Upstream's "serve a basic endpoint from pods", "multiport endpoints", "same port
/// different protocols" and the two selector-less EndpointSlice tests: endpoints follow
/// pods as they come and go, port by port, and each Service port reaches the pod that
/// serves it, over TCP and UDP.
fn service_endpoint_steps(server: &Server, ns: &str) {
    let apply = |manifest: &str| {
        server.ok_with_input(&["apply", "-n", ns, "-f", "-"], manifest);
    };
    let ready = |pod: &str| {
        server.ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "-n",
            ns,
            "--timeout=60s",
        ]);
        server.ok(&[
            "get",
            "pod",
            pod,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.podIP}",
        ])
    };
    let expect_endpoints = |name: &str, wanted: Vec<String>| {
        let mut wanted = wanted;
        wanted.sort();
        eventually(
            &format!("{name}'s endpoints to be {wanted:?}"),
            Duration::from_secs(30),
            || (endpoint_addresses(server, ns, name) == wanted).then_some(()),
        );
    };
    let tcp_name = |host: &str, port: u16| -> String {
        exec(
            server,
            ns,
            "client",
            &format!("nc -w 2 {host} {port} </dev/null"),
        )
        .unwrap_or_default()
    };
    let http_name = |host: &str, port: u16| -> String {
        exec(server, ns, "client", &http_get(host, port))
            .unwrap_or_default()
            .trim()
            .to_string()
    };

    // Basic: endpoints as pods come and go.
    apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "basic"},
  "spec": {"selector": {"app": "basic"}, "ports": [{"port": 80, "targetPort": 80}]}}"#,
    );
    expect_endpoints("basic", vec![]);
    apply(&serving_pod(
        "basic-1",
        r#"{"app": "basic"}"#,
        &[(80, "http")],
    ));
    let first = ready("basic-1");
    expect_endpoints("basic", vec![format!("{first}:80")]);
    eventually(
        "the first pod through the Service",
        Duration::from_secs(30),
        || (http_name("basic", 80) == "basic-1").then_some(()),
    );
    apply(&serving_pod(
        "basic-2",
        r#"{"app": "basic"}"#,
        &[(80, "http")],
    ));
    let second = ready("basic-2");
    expect_endpoints("basic", vec![format!("{first}:80"), format!("{second}:80")]);
    server.ok(&["delete", "pod", "basic-1", "-n", ns]);
    expect_endpoints("basic", vec![format!("{second}:80")]);
    server.ok(&["delete", "pod", "basic-2", "-n", ns]);
    expect_endpoints("basic", vec![]);

    // Multiport: each Service port to the pod whose named port it targets.
    apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "multi"},
  "spec": {"selector": {"app": "multi"}, "ports": [
    {"name": "portname1", "port": 80, "targetPort": "p100"},
    {"name": "portname2", "port": 81, "targetPort": "p101"}]}}"#,
    );
    apply(&serving_pod(
        "multi-1",
        r#"{"app": "multi"}"#,
        &[(100, "http")],
    ));
    apply(&serving_pod(
        "multi-2",
        r#"{"app": "multi"}"#,
        &[(101, "http")],
    ));
    let (one, two) = (ready("multi-1"), ready("multi-2"));
    expect_endpoints("multi", vec![format!("{one}:100"), format!("{two}:101")]);
    eventually("each port to its pod", Duration::from_secs(30), || {
        (http_name("multi", 80) == "multi-1" && http_name("multi", 81) == "multi-2").then_some(())
    });
    server.ok(&["delete", "pod", "multi-1", "multi-2", "-n", ns]);
    expect_endpoints("multi", vec![]);

    // The same port number over TCP and UDP, one container serving each.
    apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "both"},
  "spec": {"selector": {"app": "both"}, "ports": [
    {"name": "tcp-port", "port": 80, "protocol": "TCP"},
    {"name": "udp-port", "port": 80, "protocol": "UDP"}]}}"#,
    );
    apply(&serving_pod(
        "both-1",
        r#"{"app": "both"}"#,
        &[(80, "tcp"), (80, "udp")],
    ));
    let both = ready("both-1");
    expect_endpoints("both", vec![format!("{both}:80"), format!("{both}:80")]);
    let both_ip = server.ok(&[
        "get",
        "service",
        "both",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually(
        "TCP and UDP on one port number",
        Duration::from_secs(30),
        || {
            let udp = dial_udp(server, ns, "hostname", &both_ip, 80, 1);
            (tcp_name("both", 80) == "both-1" && udp.responses == ["both-1"]).then_some(())
        },
    );

    // Selector-less Services whose EndpointSlices are written by hand: one address with
    // two ports, then two addresses with two ports each.
    apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
  "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}"#,
    );
    apply(&serving_pod(
        "manual-1",
        r#"{"app": "manual"}"#,
        &[(100, "http"), (101, "http")],
    ));
    apply(&serving_pod(
        "manual-2",
        r#"{"app": "manual"}"#,
        &[(100, "http"), (101, "http")],
    ));
    let (one, two) = (ready("manual-1"), ready("manual-2"));
    let slice = |addresses: &[&str]| {
        let endpoints: Vec<String> = addresses
            .iter()
            .map(|ip| format!(r#"{{"addresses": ["{ip}"], "conditions": {{"ready": true}}}}"#))
            .collect();
        format!(
            r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {{"name": "manual-slice", "labels": {{"kubernetes.io/service-name": "manual"}}}},
  "addressType": "IPv4", "endpoints": [{}],
  "ports": [{{"name": "a", "port": 100, "protocol": "TCP"}}, {{"name": "b", "port": 101, "protocol": "TCP"}}]}}"#,
            endpoints.join(", ")
        )
    };
    apply(&slice(&[&one]));
    eventually(
        "both ports to the one address",
        Duration::from_secs(30),
        || {
            (http_name("manual", 80) == "manual-1" && http_name("manual", 81) == "manual-1")
                .then_some(())
        },
    );
    apply(&slice(&[&one, &two]));
    eventually(
        "both addresses behind both ports",
        Duration::from_secs(60),
        || {
            let seen: BTreeSet<String> = (0..12).map(|i| http_name("manual", 80 + i % 2)).collect();
            (seen == BTreeSet::from(["manual-1".to_string(), "manual-2".to_string()])).then_some(())
        },
    );
    server.ok(&[
        "delete",
        "pod",
        "both-1",
        "manual-1",
        "manual-2",
        "-n",
        ns,
        "--wait=false",
    ]);

    // Upstream's type changes: ExternalName to ClusterIP (reached through its cluster IP),
    // to NodePort (reached on the node port too), back to ExternalName (a CNAME again).
    apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "flip"},
  "spec": {"type": "ExternalName", "externalName": "example.com"}}"#,
    );
    let cname = |expected: &str| {
        eventually(
            &format!("flip as a CNAME to {expected}"),
            Duration::from_secs(30),
            || {
                let lookup = exec(
                    server,
                    ns,
                    "client",
                    &format!("nslookup -type=cname flip.{ns}.svc.cluster.local"),
                )?;
                lookup.contains(expected).then_some(())
            },
        );
    };
    cname("example.com");
    server.ok(&[
        "patch", "service", "flip", "-n", ns, "--type=merge", "-p",
        r#"{"spec": {"type": "ClusterIP", "externalName": null, "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    ]);
    let web = web_pods(server, ns, "metadata.name");
    eventually(
        "flip through its new cluster IP",
        Duration::from_secs(30),
        || web.contains(&http_name("flip", 80)).then_some(()),
    );
    server.ok(&[
        "patch",
        "service",
        "flip",
        "-n",
        ns,
        "-p",
        r#"{"spec": {"type": "NodePort"}}"#,
    ]);
    let node_port: u16 = server
        .ok(&[
            "get",
            "service",
            "flip",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("a node port");
    let node_ip = server.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    eventually("flip on its node port", Duration::from_secs(30), || {
        web.contains(&http_name(&node_ip, node_port)).then_some(())
    });
    server.ok(&[
        "patch", "service", "flip", "-n", ns, "--type=merge", "-p",
        r#"{"spec": {"type": "ExternalName", "externalName": "example.org", "clusterIP": null, "clusterIPs": null, "selector": null, "ports": null}}"#,
    ]);
    cname("example.org");
}
