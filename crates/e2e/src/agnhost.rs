//! The agnhost test image (busybox plus `/agnhost`, `crates/agnhost`) and its `/dial`
//! endpoint, the way upstream's network tests make one pod reach another over HTTP or
//! UDP: a pod running `agnhost netexec` is asked, through `kubectl exec`, to dial.

use std::collections::BTreeSet;

/// The image, named as upstream's e2e image (built by `scripts/build-test-images.sh`).
pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";

/// What one `/dial` call got.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dialed {
    pub responses: Vec<String>,
    pub errors: Vec<String>,
}

impl Dialed {
    /// The distinct answers.
    pub fn distinct(&self) -> BTreeSet<String> {
        self.responses.iter().cloned().collect()
    }
}

/// One call of `/dial`, to be run inside a pod whose `agnhost netexec` serves HTTP on
/// `netexec_port`.
pub struct Dial<'a> {
    pub netexec_port: u16,
    /// What to send: an HTTP path, or the UDP command (`hostname`, `clientip`, `echo x`).
    pub request: &'a str,
    /// `http` or `udp`.
    pub protocol: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub tries: u32,
}

impl Dial<'_> {
    /// A shell line (busybox `nc`: the static busybox's `wget` crashes) printing the
    /// JSON answer.
    pub fn script(&self) -> String {
        let request = self.request.replace(' ', "%20");
        format!(
            "printf 'GET /dial?request={request}&protocol={}&host={}&port={}&tries={} HTTP/1.0\\r\\n\\r\\n' | nc -w 30 127.0.0.1 {} | tail -n 1",
            self.protocol, self.host, self.port, self.tries, self.netexec_port
        )
    }
}

/// Reads `/dial`'s answer; `None` if it is not one.
pub fn parse(answer: &str) -> Option<Dialed> {
    let value: serde_json::Value = serde_json::from_str(answer.trim()).ok()?;
    let strings = |key: &str| -> Vec<String> {
        value[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    value.is_object().then(|| Dialed {
        responses: strings("responses"),
        errors: strings("errors"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_answers_are_read() {
        let dialed = parse(r#"{"responses":["a","b","a"],"errors":["timeout"]}"#).expect("parses");
        assert_eq!(dialed.distinct().len(), 2);
        assert_eq!(dialed.errors, ["timeout"]);
        assert_eq!(parse("{}"), Some(Dialed::default()));
        assert_eq!(parse("404 page"), None);
        let script = Dial {
            netexec_port: 8080,
            request: "echo hi",
            protocol: "udp",
            host: "10.0.0.1",
            port: 81,
            tries: 2,
        }
        .script();
        assert!(
            script.contains("/dial?request=echo%20hi&protocol=udp&host=10.0.0.1&port=81&tries=2 "),
            "{script}"
        );
    }
}
