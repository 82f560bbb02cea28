//! Container logs: the CRI log files the runtime writes, read back as the
//! raw text `kubectl logs` shows (upstream's `kuberuntime/logs`).
//!
//! Each file line is `<RFC3339Nano> <stdout|stderr> <F|P> <text>`. A `P`
//! (partial) line is a fragment the runtime cut because the container wrote
//! no newline yet; fragments join with the next lines of the same stream up
//! to an `F`, and only then does the message end with a newline. Options
//! (`sinceTime`, `tailLines`, `limitBytes`, `timestamps`) apply to joined
//! messages: a message's time is that of its first fragment.

use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The query of `/containerLogs` (upstream's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// From `sinceSeconds` or `sinceTime`: messages older than this are skipped.
    pub since: Option<Timestamp>,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<u64>,
    /// `stream=Stdout|Stderr` (upstream's split-streams option); `None` is both.
    pub stream: Option<Stream>,
}

/// Why a query was refused: upstream's kubelet answers these with fixed
/// JSON-ish bodies (400 for undecodable values, 422 for invalid ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    Decode,
    Invalid,
}

fn parse_bool(v: &str) -> Result<bool, OptionsError> {
    // Go's strconv.ParseBool, which upstream's query decoding uses.
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Ok(false),
        _ => Err(OptionsError::Decode),
    }
}

fn parse_int(v: &str) -> Result<i64, OptionsError> {
    v.parse().map_err(|_| OptionsError::Decode)
}

impl LogOptions {
    /// Decodes and validates the query, as upstream's `getContainerLogs` does.
    pub fn from_query(query: &[(String, String)], now: Timestamp) -> Result<Self, OptionsError> {
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        let mut tail = None;
        let mut limit = None;
        for (key, value) in query {
            match key.as_str() {
                "follow" => opts.follow = parse_bool(value)?,
                "previous" => opts.previous = parse_bool(value)?,
                "timestamps" => opts.timestamps = parse_bool(value)?,
                "sinceSeconds" => since_seconds = Some(parse_int(value)?),
                "sinceTime" => {
                    since_time = Some(
                        value
                            .parse::<Timestamp>()
                            .map_err(|_| OptionsError::Decode)?,
                    )
                }
                "tailLines" => tail = Some(parse_int(value)?),
                "limitBytes" => limit = Some(parse_int(value)?),
                "stream" => {
                    opts.stream = match value.as_str() {
                        "Stdout" => Some(Stream::Stdout),
                        "Stderr" => Some(Stream::Stderr),
                        "All" | "" => None,
                        _ => return Err(OptionsError::Invalid),
                    }
                }
                _ => {}
            }
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(OptionsError::Invalid);
        }
        if let Some(s) = since_seconds {
            if s < 1 {
                return Err(OptionsError::Invalid);
            }
            opts.since = now.checked_sub(jiff::SignedDuration::from_secs(s)).ok();
        }
        if since_time.is_some() {
            opts.since = since_time;
        }
        if let Some(t) = tail {
            opts.tail_lines = Some(usize::try_from(t).map_err(|_| OptionsError::Invalid)?);
        }
        if let Some(l) = limit {
            if l < 1 {
                return Err(OptionsError::Invalid);
            }
            opts.limit_bytes = Some(l as u64);
        }
        Ok(opts)
    }
}

/// One parsed file line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub time: Timestamp,
    pub stream: Stream,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one CRI log line (without its newline); `None` if malformed.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags are `:`-separated; the first says full or partial.
    let tags = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    let text = parts.next().unwrap_or(b"");
    Some(Entry {
        time,
        stream,
        partial,
        text,
    })
}

/// A joined message: complete when it ends with a newline.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub time: Timestamp,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// Upstream's output time format, RFC3339Nano: trailing zeros trimmed, `Z` for UTC.
pub fn format_time(t: Timestamp) -> String {
    t.to_string()
}

/// Joins fragments into messages, per stream; messages come out in the
/// order they complete, as a reader following the file sees them.
#[derive(Debug, Default)]
struct Joiner {
    pending: [Option<Message>; 2],
}

impl Joiner {
    fn push(&mut self, entry: Entry<'_>, out: &mut Vec<Message>) {
        let slot = &mut self.pending[entry.stream as usize];
        let message = slot.get_or_insert_with(|| Message {
            time: entry.time,
            stream: entry.stream,
            text: Vec::new(),
        });
        message.text.extend_from_slice(entry.text);
        if !entry.partial {
            message.text.push(b'\n');
            out.extend(slot.take());
        }
    }

    /// Fragments never completed (the container ended mid-line).
    fn flush(&mut self, out: &mut Vec<Message>) {
        let mut rest: Vec<Message> = self.pending.iter_mut().filter_map(Option::take).collect();
        rest.sort_by_key(|m| m.time);
        out.extend(rest);
    }
}

/// Reads one container's log file and renders it; in follow mode, call
/// [`LogReader::read_new`] as the file grows.
pub struct LogReader {
    path: PathBuf,
    opts: LogOptions,
    /// The file being followed, held open: once the kubelet rotates the log, the path
    /// names a new file, and this one is read to its end before moving on.
    file: Option<std::fs::File>,
    /// Bytes read so far, over every file followed.
    offset: u64,
    /// Bytes after the last newline read: a line still being written.
    carry: Vec<u8>,
    joiner: Joiner,
    /// Bytes still allowed by `limitBytes`.
    remaining: Option<u64>,
}

impl LogReader {
    pub fn new(path: &Path, opts: LogOptions) -> LogReader {
        LogReader {
            path: path.to_path_buf(),
            remaining: opts.limit_bytes,
            opts,
            file: None,
            offset: 0,
            carry: Vec::new(),
            joiner: Joiner::default(),
        }
    }

    /// True once `limitBytes` is used up: nothing more will be written.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    fn read_messages(&mut self) -> std::io::Result<Vec<Message>> {
        let mut data = std::mem::take(&mut self.carry);
        let start = data.len();
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(std::fs::File::open(&self.path)?),
        };
        file.read_to_end(&mut data)?;
        if rotated_away(&self.path, file) {
            // The runtime made the new file, so it writes no more to this one: what it
            // wrote since the read above, then the new file from its start.
            file.read_to_end(&mut data)?;
            let mut next = std::fs::File::open(&self.path)?;
            next.read_to_end(&mut data)?;
            self.file = Some(next);
        }
        self.offset += (data.len() - start) as u64;
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.carry = data.split_off(complete);
        let mut out = Vec::new();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match parse_line(line) {
                Some(entry) => self.joiner.push(entry, &mut out),
                None => tracing::debug!(path = %self.path.display(), "skipping malformed log line"),
            }
        }
        Ok(out)
    }

    fn render(&mut self, messages: Vec<Message>, tail: Option<usize>) -> Vec<u8> {
        let kept: Vec<Message> = messages
            .into_iter()
            .filter(|m| self.opts.since.is_none_or(|since| m.time >= since))
            .filter(|m| self.opts.stream.is_none_or(|s| s == m.stream))
            .collect();
        let skip = tail.map_or(0, |n| kept.len().saturating_sub(n));
        let mut out = Vec::new();
        for m in kept.into_iter().skip(skip) {
            if self.opts.timestamps {
                out.extend_from_slice(format_time(m.time).as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&m.text);
        }
        if let Some(remaining) = &mut self.remaining {
            out.truncate(usize::try_from(*remaining).unwrap_or(usize::MAX));
            *remaining -= out.len() as u64;
        }
        out
    }

    /// What the file holds now (the first call honours `tailLines`).
    pub fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        let tail = if self.offset == 0 {
            self.opts.tail_lines
        } else {
            None
        };
        let messages = self.read_messages()?;
        Ok(self.render(messages, tail))
    }

    /// Everything left, including an unfinished last line: the container is gone.
    pub fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let mut messages = self.read_messages()?;
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            if let Some(entry) = parse_line(&line) {
                self.joiner.push(entry, &mut messages);
            }
        }
        self.joiner.flush(&mut messages);
        Ok(self.render(messages, None))
    }
}

/// Whether `path` now names another file than `held` (the log was rotated).
fn rotated_away(path: &Path, held: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), held.metadata()) {
        (Ok(now), Ok(held)) => (now.dev(), now.ino()) != (held.dev(), held.ino()),
        _ => false,
    }
}

/// The whole log at once (no follow): what `read_new` + `finish` give.
pub fn read_all(path: &Path, opts: LogOptions) -> std::io::Result<Vec<u8>> {
    let mut reader = LogReader::new(path, opts.clone());
    let messages = {
        let mut m = reader.read_messages()?;
        if !reader.carry.is_empty() {
            let line = std::mem::take(&mut reader.carry);
            if let Some(entry) = parse_line(&line) {
                reader.joiner.push(entry, &mut m);
            }
        }
        reader.joiner.flush(&mut m);
        m
    };
    Ok(reader.render(messages, opts.tail_lines))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LOG: &str = "\
2016-10-06T00:17:09.669794202Z stdout F one
2016-10-06T00:17:10.000000000Z stderr P err-
2016-10-06T00:17:10.100000000Z stdout P tw
2016-10-06T00:17:10.200000000Z stdout F o
2016-10-06T00:17:10.300000000Z stderr F or
2016-10-06T00:17:11Z stdout F three
garbage
";

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn read(text: &str, opts: LogOptions) -> String {
        let f = write(text);
        String::from_utf8(read_all(f.path(), opts).unwrap()).unwrap()
    }

    #[test]
    fn parses_lines() {
        let e = parse_line(b"2016-10-06T00:17:09.669794202Z stderr P a b ").unwrap();
        assert_eq!(e.stream, Stream::Stderr);
        assert!(e.partial);
        assert_eq!(e.text, b"a b ");
        let e = parse_line(b"2016-10-06T00:17:09Z stdout F").unwrap();
        assert_eq!(e.text, b"");
        assert!(!e.partial);
        assert!(parse_line(b"nonsense").is_none());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdin F x").is_none());
    }

    #[test]
    fn joins_partials_per_stream() {
        assert_eq!(
            read(LOG, LogOptions::default()),
            "one\ntwo\nerr-or\nthree\n"
        );
        let opts = LogOptions {
            stream: Some(Stream::Stdout),
            ..Default::default()
        };
        assert_eq!(read(LOG, opts), "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_as_upstream_prints_them() {
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(LOG, opts),
            "2016-10-06T00:17:09.669794202Z one\n\
             2016-10-06T00:17:10.1Z two\n\
             2016-10-06T00:17:10Z err-or\n\
             2016-10-06T00:17:11Z three\n"
        );
    }

    #[test]
    fn tail_since_and_limit() {
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read(LOG, tail), "err-or\nthree\n");
        let since = LogOptions {
            since: Some("2016-10-06T00:17:10.05Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(read(LOG, since), "two\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(LOG, limit), "one\ntw");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(read(LOG, none), "");
    }

    #[test]
    fn follows_a_growing_file() {
        let f = write("2016-10-06T00:17:09Z stdout F a\n2016-10-06T00:17:09Z stdout P b");
        let mut reader = LogReader::new(f.path(), LogOptions::default());
        assert_eq!(reader.read_new().unwrap(), b"a\n");
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(f.path())
            .unwrap();
        file.write_all(b"\n2016-10-06T00:17:10Z stdout P c\n")
            .unwrap();
        assert_eq!(reader.read_new().unwrap(), b"");
        file.write_all(b"2016-10-06T00:17:11Z stdout P d\n")
            .unwrap();
        assert_eq!(reader.finish().unwrap(), b"bcd");
    }

    /// A follower reads the rotated file to its end, then the new file from its start.
    #[test]
    fn follows_across_a_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        let mut old = std::fs::File::create(&log).expect("create");
        old.write_all(b"2016-10-06T00:17:09Z stdout F a\n")
            .expect("write");
        let mut reader = LogReader::new(&log, LogOptions::default());
        assert_eq!(reader.read_new().expect("read"), b"a\n");
        // Written just before the rotation, then the file renamed away and a new one
        // written at the path.
        old.write_all(b"2016-10-06T00:17:10Z stdout F b\n")
            .expect("write");
        std::fs::rename(&log, dir.path().join("0.log.20161006-001710")).expect("rename");
        std::fs::write(&log, b"2016-10-06T00:17:11Z stdout F c\n").expect("write");
        assert_eq!(reader.read_new().expect("read"), b"b\nc\n");
        let mut new = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        new.write_all(b"2016-10-06T00:17:12Z stdout F d\n")
            .expect("write");
        assert_eq!(reader.finish().expect("finish"), b"d\n");
    }

    #[test]
    fn query_options() {
        let now: Timestamp = "2020-01-01T00:01:00Z".parse().unwrap();
        let q = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogOptions::from_query(&v, now)
        };
        let o = q(&[
            ("follow", "true"),
            ("timestamps", "1"),
            ("tailLines", "5"),
            ("sinceSeconds", "60"),
        ])
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.since, Some("2020-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(q(&[("follow", "maybe")]), Err(OptionsError::Decode));
        assert_eq!(q(&[("tailLines", "-1")]), Err(OptionsError::Invalid));
        assert_eq!(q(&[("limitBytes", "0")]), Err(OptionsError::Invalid));
        assert_eq!(
            q(&[("sinceSeconds", "5"), ("sinceTime", "2020-01-01T00:00:00Z")]),
            Err(OptionsError::Invalid)
        );
    }
}
