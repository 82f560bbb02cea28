//! Upstream's DNS, managed `/etc/hosts` and lifecycle hook conformance tests, ported
//! against one `skiff server` with its node agent, real pods and the real kubectl.
//!
//! The steps follow upstream's `test/e2e/network/dns.go`,
//! `test/e2e/common/node/kubelet_etc_hosts.go`, `kubelet.go` (hostAliases),
//! `lifecycle_hook.go` and `test/e2e/node/pre_stop.go`. Upstream's DNS probes run
//! `dig` over UDP and TCP in a querier pod; here the querier is the agnhost image
//! (busybox plus `/agnhost`): UDP lookups are busybox's `nslookup`, TCP lookups a DNS
//! message the test builds, sent with `nc` and read back byte by byte; `getent hosts`
//! (not in busybox) becomes the libc resolver of busybox's `nc` plus the file itself.
//! Everything is created up front so that the pods start together, then checked.

use std::time::Duration;

use skiff_e2e::{agnhost, eventually, ContainerRuntime, Server};

const AGNHOST: &str = agnhost::IMAGE;
const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";
const DOMAIN: &str = "cluster.local";

/// `kubectl exec` of a shell line in a pod's container: its stdout if it succeeded.
fn exec(
    server: &Server,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    script: &str,
) -> Option<String> {
    let mut args = vec!["exec", "-n", ns, pod];
    if let Some(c) = container {
        args.extend(["-c", c]);
    }
    args.extend(["--", "sh", "-c", script]);
    let out = server.kubectl(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(server: &Server, ns: &str, kind_name: &str, jsonpath: &str) -> String {
    server.ok(&[
        "get",
        "-n",
        ns,
        kind_name,
        "-o",
        &format!("jsonpath={{{jsonpath}}}"),
    ])
}

/// A DNS query for `name` of `qtype`, as sent over TCP (with its length first).
fn tcp_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut message = vec![0x53, 0x4b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend(message);
    framed
}

const A: u16 = 1;
const CNAME: u16 = 5;
const PTR: u16 = 12;
const SRV: u16 = 33;

/// A name at `at` in `msg`, following compression pointers; and where it ends.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = ((len & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            continue;
        }
        if len == 0 {
            return Some((format!("{}.", labels.join(".")), end.unwrap_or(at + 1)));
        }
        labels.push(String::from_utf8_lossy(msg.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    None
}

/// The answer section of a DNS response: each record's type and its data as text
/// (an address, a name, or `priority weight port target` for SRV); `None` unless
/// the response is a success.
fn answers(msg: &[u8]) -> Option<Vec<(u16, String)>> {
    if msg.len() < 12 || msg[3] & 0x0f != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    let (questions, records) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..records {
        at = read_name(msg, at)?.1;
        let rtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let len = u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]) as usize;
        let data = at + 10;
        let text = match rtype {
            A => msg
                .get(data..data + 4)?
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join("."),
            CNAME | PTR => read_name(msg, data)?.0,
            SRV => {
                let n = |i: usize| u16::from_be_bytes([msg[data + i], msg[data + i + 1]]);
                format!("{} {} {} {}", n(0), n(2), n(4), read_name(msg, data + 6)?.0)
            }
            _ => String::new(),
        };
        out.push((rtype, text));
        at = data + len;
    }
    Some(out)
}

/// The querier pod's view of DNS: its nameserver and search list, from its own
/// resolv.conf.
struct Querier<'a> {
    server: &'a Server,
    ns: &'a str,
    pod: &'a str,
    nameserver: String,
    search: Vec<String>,
}

impl<'a> Querier<'a> {
    fn new(server: &'a Server, ns: &'a str, pod: &'a str) -> Querier<'a> {
        let resolv = exec(server, ns, pod, None, "cat /etc/resolv.conf").expect("resolv.conf");
        let word = |key: &str| -> Vec<String> {
            resolv
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|rest| rest.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        Querier {
            server,
            ns,
            pod,
            nameserver: word("nameserver").first().cloned().expect("a nameserver"),
            search: word("search"),
        }
    }

    /// One query over TCP from the pod; the answers, if it succeeded.
    fn tcp(&self, name: &str, qtype: u16) -> Option<Vec<(u16, String)>> {
        let bytes: String = tcp_query(name, qtype)
            .iter()
            .map(|b| format!("\\{b:03o}"))
            .collect();
        let script = format!(
            "printf '{bytes}' | timeout 5 nc {} 53 | od -An -v -tx1",
            self.nameserver
        );
        let out = exec(self.server, self.ns, self.pod, None, &script)?;
        let raw: Vec<u8> = out
            .split_whitespace()
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        answers(raw.get(2..)?)
    }

    /// As `dig +tcp +search`: the name under each search domain, then as it is; the
    /// first non-empty answer.
    fn tcp_search(&self, name: &str, qtype: u16) -> Option<Vec<(u16, String)>> {
        self.search
            .iter()
            .map(|suffix| format!("{name}.{suffix}"))
            .chain([name.to_string()])
            .find_map(|candidate| self.tcp(&candidate, qtype).filter(|a| !a.is_empty()))
    }

    /// busybox `nslookup` (UDP) of `name`; its output if it found an answer.
    fn udp(&self, name: &str, qtype: &str) -> Option<String> {
        let out = exec(
            self.server,
            self.ns,
            self.pod,
            None,
            &format!("nslookup -type={qtype} {name} {}", self.nameserver),
        )?;
        let found =
            !out.contains("can't find") && out.lines().skip(2).any(|l| !l.trim().is_empty());
        found.then_some(out)
    }

    /// As `dig +notcp +search` (busybox's `nslookup` tries the name only as given):
    /// the name under each search domain, then as it is; the first answer.
    fn udp_search(&self, name: &str, qtype: &str) -> Option<String> {
        self.search
            .iter()
            .map(|suffix| format!("{name}.{suffix}"))
            .chain([name.to_string()])
            .find_map(|candidate| self.udp(&candidate, qtype))
    }

    /// Upstream's probe for one name: an answer of `qtype` over UDP and over TCP
    /// (both with the search list), each containing `expected`.
    fn resolves(&self, name: &str, qtype: u16, expected: &str) {
        let kind = match qtype {
            A => "a",
            SRV => "srv",
            PTR => "ptr",
            _ => "cname",
        };
        eventually(
            &format!("{name} ({kind}) over UDP and TCP with {expected}"),
            Duration::from_secs(30),
            || {
                let udp = self.udp_search(name, kind)?;
                let tcp = self.tcp_search(name, qtype)?;
                let ok = udp.contains(expected)
                    && tcp
                        .iter()
                        .any(|(t, text)| *t == qtype && text.contains(expected));
                ok.then_some(())
            },
        );
    }

    /// The address the pod's libc resolver (files, then DNS) finds for `name`, read
    /// from busybox `nc`'s refused connection to it.
    fn libc_address(&self, name: &str) -> Option<String> {
        let out = self.server.kubectl(&[
            "exec",
            "-n",
            self.ns,
            self.pod,
            "--",
            "sh",
            "-c",
            &format!("nc -w 2 {name} 9 </dev/null 2>&1; true"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let open = text.find('(')?;
        let close = text[open..].find(')')? + open;
        Some(text[open + 1..close].to_string())
    }
}

/// `a-b-c-d.<ns>.pod.<domain>`: a pod's A record name.
fn pod_a_record(ip: &str, ns: &str) -> String {
    format!("{}.{ns}.pod.{DOMAIN}", ip.replace('.', "-"))
}

/// The reverse-lookup name of an IPv4 address.
fn reverse(ip: &str) -> String {
    let mut octets: Vec<&str> = ip.split('.').collect();
    octets.reverse();
    format!("{}.in-addr.arpa", octets.join("."))
}

fn manifests(ns: &str) -> String {
    let service = |name: &str, headless: bool, selector: &str| {
        let cluster_ip = if headless { "\n  clusterIP: None" } else { "" };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:{cluster_ip}\n  selector: {{{selector}: \"true\"}}\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\n"
        )
    };
    let agnhost_pod = |name: &str, extra: &str, args: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}{extra}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: agnhost\n    image: {AGNHOST}\n    args: [{args}]\n---\n"
        )
    };
    let mut out = String::new();
    out += &service("dns-test-service", true, "dns-test");
    out += &service("test-service-2", false, "dns-test");
    out += &service("dns-test-service-2", true, "dns-test-hostname-attribute");
    out += &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dns-test-service-3, namespace: {ns}}}\nspec:\n  type: ExternalName\n  externalName: foo.example.com\n---\n"
    );
    // The queriers: upstream's probe pod (hostname dns-querier-1, subdomain
    // dns-test-service) behind the first two Services, and the hostname/subdomain
    // tests' pod behind the third.
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: dns-test, namespace: {ns}, labels: {{dns-test: \"true\"}}}}\nspec:\n  hostname: dns-querier-1\n  subdomain: dns-test-service\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: querier, image: {AGNHOST}, args: [pause]}}\n---\n"
    );
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: dns-test-2, namespace: {ns}, labels: {{dns-test-hostname-attribute: \"true\"}}}}\nspec:\n  hostname: dns-querier-2\n  subdomain: dns-test-service-2\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: querier, image: {AGNHOST}, args: [pause]}}\n---\n"
    );
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: test-dns-nameservers, namespace: {ns}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [1.1.1.1]\n    searches: [resolv.conf.local]\n    options: [{{name: ndots, value: \"2\"}}]\n  containers:\n  - {{name: agnhost, image: {AGNHOST}, args: [pause]}}\n---\n"
    );
    // kubelet_etc_hosts.go's two pods: three containers on the pod's network (the
    // third mounting the node's /etc/hosts over its own), two on the host's.
    let hosts_volume = "  volumes:\n  - {name: host-etc-hosts, hostPath: {path: /etc/hosts, type: FileOrCreate}}\n";
    let original = "{name: host-etc-hosts, mountPath: /etc/hosts-original}";
    let container = |name: &str, mounts: &str| {
        format!("  - {{name: {name}, image: {AGNHOST}, args: [pause], volumeMounts: [{mounts}]}}\n")
    };
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: test-pod, namespace: {ns}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n{}{}{}{hosts_volume}---\n",
        container("busybox-1", original),
        container("busybox-2", original),
        container(
            "busybox-3",
            &format!("{original}, {{name: host-etc-hosts, mountPath: /etc/hosts}}")
        ),
    );
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: test-host-network-pod, namespace: {ns}}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n{}{}{hosts_volume}---\n",
        container("busybox-1", original),
        container("busybox-2", original),
    );
    // kubelet.go: a busybox pod with hostAliases prints its /etc/hosts.
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: busybox-host-aliases, namespace: {ns}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  hostAliases:\n  - {{ip: 123.45.67.89, hostnames: [foo, bar]}}\n  containers:\n  - {{name: busybox, image: {BUSYBOX}, command: [sh, -c, 'cat /etc/hosts; sleep 6000']}}\n---\n"
    );
    // lifecycle_hook.go: a handler per hook test, each logging the requests it gets;
    // pre_stop.go: the nettest state server.
    for case in [
        "poststart-exec",
        "prestop-exec",
        "poststart-http",
        "prestop-http",
    ] {
        out += &agnhost_pod(&format!("handler-{case}"), "", "netexec");
    }
    out += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: {ns}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: server\n    image: {AGNHOST}\n    args: [nettest]\n    ports: [{{containerPort: 8080}}]\n"
    );
    out
}

/// lifecycle_hook.go's pod with a hook: a sidecar (restartable init container) running
/// netexec behind a startup probe, and the container with the hook.
fn pod_with_hook(ns: &str, name: &str, lifecycle: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  initContainers:
  - name: container-redirect
    image: {AGNHOST}
    args: [netexec, --udp-port, "-1"]
    restartPolicy: Always
    startupProbe:
      httpGet: {{path: "/echo?msg=startup", port: 8080}}
  containers:
  - name: {name}
    image: {AGNHOST}
    args: [pause]
    lifecycle:
{lifecycle}
"#
    )
}

#[test]
fn dns_hosts_files_and_lifecycle_hooks() {
    dns_hosts_files_and_lifecycle_hooks_on(ContainerRuntime::Skiff);
}

/// The same steps with containerd running the pods.
#[test]
fn dns_hosts_files_and_lifecycle_hooks_with_containerd() {
    dns_hosts_files_and_lifecycle_hooks_on(ContainerRuntime::Containerd);
}

fn dns_hosts_files_and_lifecycle_hooks_on(runtime: ContainerRuntime) {
    let server = Server::start_node_on(runtime, &[]);
    let ns = server.namespace("dns");
    server.ok_with_input(&["apply", "-f", "-"], &manifests(&ns));
    server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "--all",
        "-n",
        &ns,
        "--timeout=180s",
    ]);

    // The hook pods need their handlers' addresses.
    let handler_ip = |case: &str| {
        field(
            &server,
            &ns,
            &format!("pod/handler-{case}"),
            ".status.podIP",
        )
    };
    let exec_hook = |kind: &str, msg: &str, ip: &str| {
        format!(
            "      {kind}:\n        exec:\n          command: [sh, -c, \"printf 'GET /echo?msg={msg} HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 3 {ip} 8080\"]"
        )
    };
    let http_hook = |kind: &str, msg: &str, ip: &str| {
        format!(
            "      {kind}:\n        httpGet:\n          path: \"/dial?host={ip}&port=8080&request=echo%3Fmsg%3D{msg}\"\n          port: 8080"
        )
    };
    let hook_pods = [
        (
            "pod-with-poststart-exec-hook",
            "poststart-exec",
            exec_hook("postStart", "poststart", &handler_ip("poststart-exec")),
        ),
        (
            "pod-with-prestop-exec-hook",
            "prestop-exec",
            exec_hook("preStop", "prestop", &handler_ip("prestop-exec")),
        ),
        (
            "pod-with-poststart-http-hook",
            "poststart-http",
            http_hook("postStart", "poststart", &handler_ip("poststart-http")),
        ),
        (
            "pod-with-prestop-http-hook",
            "prestop-http",
            http_hook("preStop", "prestop", &handler_ip("prestop-http")),
        ),
    ];
    let mut hooks = String::new();
    for (name, _, lifecycle) in &hook_pods {
        hooks += &pod_with_hook(&ns, name, lifecycle);
        hooks += "---\n";
    }
    // pre_stop.go's tester: a preStop that posts to the server's /write.
    let server_ip = field(&server, &ns, "pod/server", ".status.podIP");
    hooks += &format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tester, namespace: {ns}}}
spec:
  containers:
  - name: tester
    image: {BUSYBOX}
    command: [sleep, "600"]
    lifecycle:
      preStop:
        exec:
          command: [sh, -c, "printf 'POST /write HTTP/1.0\\r\\nContent-Length: 20\\r\\n\\r\\n{{\"Source\": \"prestop\"}}' | nc -w 3 {server_ip} 8080"]
"#
    );
    server.ok_with_input(&["apply", "-f", "-"], &hooks);

    dns_checks(&server, &ns);
    etc_hosts_checks(&server, &ns);
    lifecycle_hook_checks(&server, &ns, &hook_pods.map(|(name, case, _)| (name, case)));
    pre_stop_check(&server, &ns);
}

fn dns_checks(server: &Server, ns: &str) {
    let q = Querier::new(server, ns, "dns-test");
    let pod_ip = field(server, ns, "pod/dns-test", ".status.podIP");
    let kubernetes_ip = field(server, "default", "service/kubernetes", ".spec.clusterIP");

    // DNS, cluster: kubernetes.default's FQDN, and the pod's own A record.
    q.resolves(
        &format!("kubernetes.default.svc.{DOMAIN}"),
        A,
        &kubernetes_ip,
    );
    q.resolves(&pod_a_record(&pod_ip, ns), A, &pod_ip);

    // DNS, /etc/hosts entries: the pod's FQDN and hostname through the resolver.
    let fqdn = format!("dns-querier-1.dns-test-service.{ns}.svc.{DOMAIN}");
    let hosts = exec(server, ns, "dns-test", None, "cat /etc/hosts").expect("hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l == format!("{pod_ip}\t{fqdn}\tdns-querier-1")),
        "{hosts}"
    );
    for name in [fqdn.as_str(), "dns-querier-1"] {
        assert_eq!(
            q.libc_address(name).as_deref(),
            Some(pod_ip.as_str()),
            "{name}"
        );
    }

    // DNS, services: the headless Service's A record (the querier's own address, as
    // it is its endpoint), both Services' SRV records, the regular one's PTR.
    let cluster_ip = field(server, ns, "service/test-service-2", ".spec.clusterIP");
    q.resolves(&format!("dns-test-service.{ns}.svc.{DOMAIN}"), A, &pod_ip);
    q.resolves(
        &format!("_http._tcp.dns-test-service.{ns}.svc.{DOMAIN}"),
        SRV,
        &format!("80 dns-querier-1.dns-test-service.{ns}.svc.{DOMAIN}"),
    );
    q.resolves(
        &format!("_http._tcp.test-service-2.{ns}.svc.{DOMAIN}"),
        SRV,
        &format!("80 test-service-2.{ns}.svc.{DOMAIN}"),
    );
    q.resolves(
        &reverse(&cluster_ip),
        PTR,
        &format!("test-service-2.{ns}.svc.{DOMAIN}"),
    );

    // DNS, PQDN for services: the same through the search list.
    for name in [
        "dns-test-service".to_string(),
        format!("dns-test-service.{ns}"),
        format!("dns-test-service.{ns}.svc"),
    ] {
        q.resolves(&name, A, &pod_ip);
    }
    q.resolves(
        &format!("_http._tcp.dns-test-service.{ns}.svc"),
        SRV,
        "80 dns-querier-1",
    );
    q.resolves(
        &format!("_http._tcp.test-service-2.{ns}.svc"),
        SRV,
        "80 test-service-2",
    );

    // DNS, resolve the hostname / the subdomain: the second pod, named
    // dns-querier-2 in dns-test-service-2.
    let q2 = Querier::new(server, ns, "dns-test-2");
    let ip2 = field(server, ns, "pod/dns-test-2", ".status.podIP");
    let fqdn2 = format!("dns-querier-2.dns-test-service-2.{ns}.svc.{DOMAIN}");
    for name in [fqdn2.as_str(), "dns-querier-2"] {
        assert_eq!(
            q2.libc_address(name).as_deref(),
            Some(ip2.as_str()),
            "{name}"
        );
    }
    q2.resolves(&pod_a_record(&ip2, ns), A, &ip2);
    q2.resolves(&fqdn2, A, &ip2);
    q2.resolves(&format!("dns-test-service-2.{ns}.svc.{DOMAIN}"), A, &ip2);

    // DNS, ExternalName: a CNAME, which follows the Service's change, then the
    // cluster IP once it is a ClusterIP Service.
    let external = format!("dns-test-service-3.{ns}.svc.{DOMAIN}");
    q.resolves(&external, CNAME, "foo.example.com");
    server.ok(&[
        "patch",
        "service",
        "dns-test-service-3",
        "-n",
        ns,
        "-p",
        r#"{"spec":{"externalName":"bar.example.com"}}"#,
    ]);
    q.resolves(&external, CNAME, "bar.example.com");
    server.ok(&[
        "patch",
        "service",
        "dns-test-service-3",
        "-n",
        ns,
        "-p",
        r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"name":"http","protocol":"TCP"}]}}"#,
    ]);
    let ip3 = field(server, ns, "service/dns-test-service-3", ".spec.clusterIP");
    assert!(!ip3.is_empty(), "a cluster IP");
    q.resolves(&external, A, &ip3);

    // DNS, custom dnsConfig: agnhost reads the pod's resolv.conf as upstream's does.
    let run = |arg: &str| {
        let out = server.ok(&[
            "exec",
            "-n",
            ns,
            "test-dns-nameservers",
            "--",
            "/agnhost",
            arg,
        ]);
        out.trim().to_string()
    };
    assert!(run("dns-suffix").contains("resolv.conf.local"));
    assert!(run("dns-server-list").contains("1.1.1.1"));
    let resolv = exec(
        server,
        ns,
        "test-dns-nameservers",
        None,
        "cat /etc/resolv.conf",
    )
    .expect("resolv");
    assert_eq!(
        resolv,
        "search resolv.conf.local\nnameserver 1.1.1.1\noptions ndots:2\n"
    );
}

fn etc_hosts_checks(server: &Server, ns: &str) {
    let managed = |pod: &str, container: &str| {
        let hosts = exec(server, ns, pod, Some(container), "cat /etc/hosts").expect("hosts");
        let original =
            exec(server, ns, pod, Some(container), "cat /etc/hosts-original").expect("original");
        assert!(!hosts.is_empty() && !original.is_empty());
        hosts.starts_with("# Kubernetes-managed hosts file.") && hosts != original
    };
    assert!(managed("test-pod", "busybox-1"));
    assert!(managed("test-pod", "busybox-2"));
    assert!(!managed("test-pod", "busybox-3"));
    assert!(!managed("test-host-network-pod", "busybox-1"));
    assert!(!managed("test-host-network-pod", "busybox-2"));
    // The host network pod's file is the node's.
    let node_hosts = std::fs::read_to_string("/etc/hosts").expect("node hosts");
    let hosts = exec(
        server,
        ns,
        "test-host-network-pod",
        Some("busybox-1"),
        "cat /etc/hosts",
    )
    .expect("hosts");
    assert!(hosts.contains(&node_hosts), "{hosts}");

    // hostAliases: appended to the managed file.
    let logs = eventually(
        "the hostAliases pod's output",
        Duration::from_secs(30),
        || {
            let logs = server.ok(&["logs", "-n", ns, "busybox-host-aliases"]);
            logs.contains("123.45.67.89\tfoo\tbar").then_some(logs)
        },
    );
    assert!(
        logs.starts_with("# Kubernetes-managed hosts file."),
        "{logs}"
    );
}

fn lifecycle_hook_checks(server: &Server, ns: &str, pods: &[(&str, &str)]) {
    let handler_log = |case: &str| server.ok(&["logs", "-n", ns, &format!("handler-{case}")]);
    for (name, _) in pods {
        server.ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "-n",
            ns,
            "--timeout=120s",
        ]);
    }
    for (_, case) in pods
        .iter()
        .filter(|(_, case)| case.starts_with("poststart"))
    {
        eventually(
            &format!("{case}: the postStart request"),
            Duration::from_secs(60),
            || {
                handler_log(case)
                    .contains("GET /echo?msg=poststart")
                    .then_some(())
            },
        );
    }
    // Deleted with a grace period of 15 s, as upstream's test does: the preStop hooks
    // reach their handlers.
    let mut delete = vec![
        "delete",
        "pod",
        "-n",
        ns,
        "--grace-period=15",
        "--timeout=60s",
    ];
    delete.extend(pods.iter().map(|(name, _)| *name));
    server.ok(&delete);
    for (_, case) in pods.iter().filter(|(_, case)| case.starts_with("prestop")) {
        eventually(
            &format!("{case}: the preStop request"),
            Duration::from_secs(30),
            || {
                handler_log(case)
                    .contains("GET /echo?msg=prestop")
                    .then_some(())
            },
        );
    }
    // No hook but its own reached a handler.
    assert!(!handler_log("poststart-exec").contains("msg=prestop"));
    assert!(!handler_log("prestop-exec").contains("msg=poststart"));
}

fn pre_stop_check(server: &Server, ns: &str) {
    server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/tester",
        "-n",
        ns,
        "--timeout=120s",
    ]);
    server.ok(&["delete", "pod", "tester", "-n", ns, "--wait=false"]);
    let path = format!("/api/v1/namespaces/{ns}/pods/server/proxy/read");
    let state = eventually(
        "the server to count the preStop's write",
        Duration::from_secs(60),
        || {
            let out = server.kubectl(&["get", "--raw", &path]);
            let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (body["Received"]["prestop"].as_u64().unwrap_or(0) != 0).then_some(body)
        },
    );
    assert_eq!(state["Received"]["prestop"], 1, "{state}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_messages_are_built_and_read() {
        let query = tcp_query("a.b", SRV);
        assert_eq!(&query[..2], &[0, 21]);
        assert_eq!(&query[14..21], &[1, b'a', 1, b'b', 0, 0, 33]);
        // A response to it: the question, then an SRV answer whose target points back
        // at the question's name.
        let mut msg = query[2..].to_vec();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 1;
        msg.extend([
            0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 30, 0, 8, 0, 0, 0, 100, 0, 80, 0xc0, 12,
        ]);
        assert_eq!(
            answers(&msg),
            Some(vec![(SRV, "0 100 80 a.b.".to_string())])
        );
        msg[3] = 0x83; // NXDOMAIN
        assert_eq!(answers(&msg), None);
        assert_eq!(reverse("10.96.0.1"), "1.0.96.10.in-addr.arpa");
        assert_eq!(
            pod_a_record("10.88.0.5", "ns"),
            "10-88-0-5.ns.pod.cluster.local"
        );
    }
}
