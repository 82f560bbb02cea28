//! Links in proxied answers pointed back through the proxy, as upstream's proxy
//! transport does for `pods/proxy`, `services/proxy` and `nodes/proxy`: a page served
//! by a pod links to `/rewriteme`, which the client must reach as
//! `/api/v1/namespaces/ns/pods/name/proxy/rewriteme`.
//!
//! The `Location` of any answer is rewritten, and in HTML answers (`text/html`, plain,
//! gzip or deflate) the URL attributes of upstream's list of tags. A URL is rewritten
//! when it is an absolute path, or names the backend itself; relative URLs and other
//! hosts' are left alone, as are paths already under the proxy.

use std::io::{Read, Write};

/// The URL attributes of each tag that upstream rewrites.
const URL_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("a", &["href"]),
    ("applet", &["codebase"]),
    ("area", &["href"]),
    ("audio", &["src"]),
    ("base", &["href"]),
    ("blockquote", &["cite"]),
    ("body", &["background"]),
    ("button", &["formaction"]),
    ("command", &["icon"]),
    ("del", &["cite"]),
    ("embed", &["src"]),
    ("form", &["action"]),
    ("frame", &["longdesc", "src"]),
    ("head", &["profile"]),
    ("html", &["manifest"]),
    ("iframe", &["longdesc", "src"]),
    ("img", &["longdesc", "src", "usemap"]),
    ("input", &["src", "usemap", "formaction"]),
    ("ins", &["cite"]),
    ("link", &["href"]),
    ("object", &["classid", "codebase", "data", "usemap"]),
    ("q", &["cite"]),
    ("script", &["src"]),
    ("source", &["src"]),
    ("video", &["poster", "src"]),
];

/// Where rewritten links point: the proxy's path (`…/proxy`, no trailing slash) and the
/// backend's `host:port`, whose absolute URLs count as its own.
#[derive(Debug, Clone)]
pub struct ProxyLinks {
    pub prefix: String,
    pub backend: String,
}

impl ProxyLinks {
    /// `url` as the client must follow it, or `None` to leave it as it is.
    pub fn rewrite_url(&self, url: &str) -> Option<String> {
        let (path_and_rest, had_authority) = match url.split_once("://") {
            Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains('/') => {
                (self.own_path(rest)?, true)
            }
            _ => match url.strip_prefix("//") {
                Some(rest) => (self.own_path(rest)?, true),
                None => (url, false),
            },
        };
        let split_at = path_and_rest
            .find(['?', '#'])
            .unwrap_or(path_and_rest.len());
        let (path, rest) = path_and_rest.split_at(split_at);
        if !path.starts_with('/') {
            // Relative: it resolves under the proxy's path already.
            return had_authority.then(|| format!("{}{}", self.prefix, rest));
        }
        if path.starts_with(&self.prefix) {
            return had_authority.then(|| format!("{path}{rest}"));
        }
        let mut joined = clean(&format!("{}/{}", self.prefix, path));
        if path.ends_with('/') && !joined.ends_with('/') {
            joined.push('/');
        }
        Some(format!("{joined}{rest}"))
    }

    /// The path of an authority-qualified URL (`host/path…`) when the host is the
    /// backend's; `None` for another host.
    fn own_path<'u>(&self, after_scheme: &'u str) -> Option<&'u str> {
        let end = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let (host, path) = after_scheme.split_at(end);
        (host == self.backend).then_some(path)
    }

    /// An HTML page with its links rewritten.
    pub fn rewrite_html(&self, html: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(html.len() + html.len() / 8);
        let mut at = 0;
        while let Some(offset) = html[at..].iter().position(|b| *b == b'<') {
            let start = at + offset;
            out.extend_from_slice(&html[at..start]);
            at = if html[start..].starts_with(b"<!--") {
                let end = find(html, start + 4, b"-->").map_or(html.len(), |i| i + 3);
                out.extend_from_slice(&html[start..end]);
                end
            } else {
                match html.get(start + 1) {
                    Some(c) if c.is_ascii_alphabetic() => self.start_tag(html, start, &mut out),
                    _ => {
                        out.push(b'<');
                        start + 1
                    }
                }
            };
        }
        out.extend_from_slice(&html[at..]);
        out
    }

    /// Copies the start tag at `start` (its URL attributes rewritten), and for `script`
    /// and `style` their raw contents; returns where copying stopped.
    fn start_tag(&self, html: &[u8], start: usize, out: &mut Vec<u8>) -> usize {
        let name_end = start
            + 1
            + html[start + 1..]
                .iter()
                .position(|b| !b.is_ascii_alphanumeric())
                .unwrap_or(html.len() - start - 1);
        let tag = String::from_utf8_lossy(&html[start + 1..name_end]).to_ascii_lowercase();
        let rewritten: &[&str] = URL_ATTRIBUTES
            .iter()
            .find(|(t, _)| *t == tag)
            .map_or(&[], |(_, attributes)| attributes);
        out.extend_from_slice(&html[start..name_end]);
        let mut at = name_end;
        loop {
            let Some(&b) = html.get(at) else {
                return at;
            };
            if b == b'>' {
                out.push(b);
                at += 1;
                break;
            }
            if b.is_ascii_whitespace() || b == b'/' {
                out.push(b);
                at += 1;
                continue;
            }
            // An attribute: name, then maybe `=` and a value.
            let name_len = html[at..]
                .iter()
                .position(|c| c.is_ascii_whitespace() || matches!(c, b'=' | b'>' | b'/'))
                .unwrap_or(html.len() - at);
            let name = String::from_utf8_lossy(&html[at..at + name_len]).to_ascii_lowercase();
            out.extend_from_slice(&html[at..at + name_len]);
            at += name_len;
            let mut look = at;
            while html.get(look).is_some_and(u8::is_ascii_whitespace) {
                look += 1;
            }
            if html.get(look) != Some(&b'=') {
                continue;
            }
            look += 1;
            while html.get(look).is_some_and(u8::is_ascii_whitespace) {
                look += 1;
            }
            out.extend_from_slice(&html[at..look]);
            at = look;
            let (quote, value_start) = match html.get(at) {
                Some(q @ (b'"' | b'\'')) => (Some(*q), at + 1),
                _ => (None, at),
            };
            let value_end = match quote {
                Some(q) => find(html, value_start, &[q]).unwrap_or(html.len()),
                None => {
                    value_start
                        + html[value_start..]
                            .iter()
                            .position(|c| c.is_ascii_whitespace() || *c == b'>')
                            .unwrap_or(html.len() - value_start)
                }
            };
            let value = String::from_utf8_lossy(&html[value_start..value_end]);
            let new_value = rewritten
                .contains(&name.as_str())
                .then(|| self.rewrite_url(value.trim()))
                .flatten();
            let q = quote.unwrap_or(b'"');
            match new_value {
                Some(url) => {
                    out.push(q);
                    out.extend_from_slice(url.as_bytes());
                    out.push(q);
                }
                None => {
                    out.extend_from_slice(&html[at..value_end]);
                    if let Some(q) = quote {
                        out.push(q);
                    }
                }
            }
            at = (value_end + usize::from(quote.is_some())).min(html.len());
        }
        // Scripts and styles hold raw text, not markup: copied to their end tag.
        if tag == "script" || tag == "style" {
            let end_tag = format!("</{tag}");
            let end = find_ignoring_case(html, at, end_tag.as_bytes()).unwrap_or(html.len());
            out.extend_from_slice(&html[at..end]);
            return end;
        }
        at
    }

    /// An answer body as its `Content-Encoding` (`gzip`, `deflate` or none) holds it,
    /// rewritten; `None` for an encoding this cannot read (passed on as it is).
    pub fn rewrite_encoded_html(&self, body: &[u8], encoding: &str) -> Option<Vec<u8>> {
        use flate2::{read, write, Compression};
        fn read_all(mut decoder: impl Read) -> Option<Vec<u8>> {
            let mut out = Vec::new();
            decoder.read_to_end(&mut out).ok().map(|_| out)
        }
        let encoding = encoding.trim();
        let html = match encoding {
            "" | "identity" => return Some(self.rewrite_html(body)),
            "gzip" => read_all(read::GzDecoder::new(body))?,
            "deflate" => read_all(read::ZlibDecoder::new(body))?,
            _ => return None,
        };
        let page = self.rewrite_html(&html);
        if encoding == "gzip" {
            let mut encoder = write::GzEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(&page).ok()?;
            encoder.finish().ok()
        } else {
            let mut encoder = write::ZlibEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(&page).ok()?;
            encoder.finish().ok()
        }
    }
}

/// Whether a `Content-Type` is HTML, the only kind whose body is rewritten.
pub fn is_html(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"))
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

fn find_ignoring_case(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| from + i)
}

/// A path with `.`, `..` and repeated slashes resolved (Go's `path.Clean`, which
/// upstream's join applies).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> ProxyLinks {
        ProxyLinks {
            prefix: "/api/v1/namespaces/ns/pods/web:80/proxy".into(),
            backend: "10.42.0.5:80".into(),
        }
    }

    #[test]
    fn urls_as_upstream_rewrites_them() {
        let l = links();
        let p = "/api/v1/namespaces/ns/pods/web:80/proxy";
        assert_eq!(l.rewrite_url("/rewriteme"), Some(format!("{p}/rewriteme")));
        assert_eq!(l.rewrite_url("/"), Some(format!("{p}/")));
        assert_eq!(l.rewrite_url("/a/b/"), Some(format!("{p}/a/b/")));
        assert_eq!(
            l.rewrite_url("/a/../b?x=1#top"),
            Some(format!("{p}/b?x=1#top"))
        );
        // The backend's own absolute URLs lose their host.
        assert_eq!(
            l.rewrite_url("http://10.42.0.5:80/x"),
            Some(format!("{p}/x"))
        );
        // Left alone: relative, other hosts, already under the proxy.
        assert_eq!(l.rewrite_url("rewriteme"), None);
        assert_eq!(l.rewrite_url("../up"), None);
        assert_eq!(l.rewrite_url("http://example.com/x"), None);
        assert_eq!(l.rewrite_url("//example.com/x"), None);
        assert_eq!(l.rewrite_url(&format!("{p}/x")), None);
        assert_eq!(l.rewrite_url("mailto:someone@example.com"), None);
    }

    #[test]
    fn html_links_of_listed_attributes_only() {
        let l = links();
        let p = "/api/v1/namespaces/ns/pods/web:80/proxy";
        let page = concat!(
            r#"<html><head><link rel="stylesheet" href='/s.css'></head>"#,
            r#"<!-- <a href="/commented"> -->"#,
            r#"<body><a href="/rewriteme">test</a> <A HREF=/up>up</A>"#,
            r#"<a title="/not-a-link" href="rel">r</a><img src="/i.png" alt="/alt">"#,
            r#"<script src="/app.js">var s = '<a href="/in-script">';</script>"#,
            r#"<form action="/post" method="post"></form> 1 < 2</body></html>"#,
        );
        let out = String::from_utf8(l.rewrite_html(page.as_bytes())).expect("utf-8");
        assert_eq!(
            out,
            format!(
                concat!(
                    r#"<html><head><link rel="stylesheet" href='{p}/s.css'></head>"#,
                    r#"<!-- <a href="/commented"> -->"#,
                    r#"<body><a href="{p}/rewriteme">test</a> <A HREF="{p}/up">up</A>"#,
                    r#"<a title="/not-a-link" href="rel">r</a><img src="{p}/i.png" alt="/alt">"#,
                    r#"<script src="{p}/app.js">var s = '<a href="/in-script">';</script>"#,
                    r#"<form action="{p}/post" method="post"></form> 1 < 2</body></html>"#,
                ),
                p = p
            )
        );
    }

    #[test]
    fn compressed_pages_are_rewritten_in_their_encoding() {
        let l = links();
        let page = br#"<a href="/rewriteme">test</a>"#;
        let expected = l.rewrite_html(page);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(page).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let back = l.rewrite_encoded_html(&gz, "gzip").expect("rewritten");
        let mut html = Vec::new();
        flate2::read::GzDecoder::new(back.as_slice())
            .read_to_end(&mut html)
            .expect("gunzip");
        assert_eq!(html, expected);
        assert_eq!(l.rewrite_encoded_html(page, "br"), None);
        assert!(is_html("text/html; charset=utf-8"));
        assert!(!is_html("text/plain"));
    }
}
