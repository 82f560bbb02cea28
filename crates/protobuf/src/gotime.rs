//! Go's JSON forms of metav1.Time, metav1.MicroTime and metav1.Duration.

/// `time.Time{}.Unix()`: what Go writes for a zero metav1.Time in protobuf.
pub(crate) const GO_ZERO_UNIX: i64 = -62_135_596_800;

fn timestamp(seconds: i64, nanos: i32) -> Result<jiff::Timestamp, String> {
    jiff::Timestamp::new(seconds, nanos.clamp(0, 999_999_999))
        .map_err(|e| format!("timestamp out of range: {e}"))
}

/// RFC 3339 with seconds precision in UTC, as metav1.Time marshals (`2024-01-02T03:04:05Z`).
pub(crate) fn format_time(seconds: i64) -> Result<String, String> {
    Ok(timestamp(seconds, 0)?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string())
}

/// RFC 3339 with microseconds in UTC, as metav1.MicroTime marshals.
pub(crate) fn format_micro_time(seconds: i64, nanos: i32) -> Result<String, String> {
    let ts = timestamp(seconds, nanos)?;
    Ok(format!(
        "{}.{:06}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_nanosecond() / 1000
    ))
}

/// Parses an RFC 3339 timestamp into (seconds, nanos).
pub(crate) fn parse_time(s: &str) -> Result<(i64, i32), String> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("invalid RFC 3339 time {s:?}: {e}"))?;
    Ok((ts.as_second(), ts.subsec_nanosecond()))
}

fn frac(v: u64, scale: u64) -> String {
    if v == 0 {
        return String::new();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{v:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// Go's `time.Duration.String()`.
pub(crate) fn format_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000 {
            return format!("{sign}{u}ns");
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{}{unit}", u / scale, frac(u % scale, scale));
    }
    let secs = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}{}s", frac(sub, 1_000_000_000)));
    out
}

/// Go's `time.ParseDuration`.
pub(crate) fn parse_duration(input: &str) -> Result<i64, String> {
    let err = || format!("invalid duration {input:?}");
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let int_part = &s[..int_end];
        s = &s[int_end..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac_part = &rest[..end];
            s = &rest[end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit: i128 = match &s[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        s = &s[unit_end..];
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut value = int.checked_mul(unit).ok_or_else(err)?;
        let mut scale = unit;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            value += i128::from(d - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > i128::from(i64::MAX) {
            return Err(err());
        }
    }
    let total = i64::try_from(total).map_err(|_| err())?;
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (n, s) in [
            (0, "0s"),
            (3_600_000_000_000, "1h0m0s"),
            (90_000_000_000, "1m30s"),
            (1_500_000_000, "1.5s"),
            (1_500_000, "1.5ms"),
            (2_000, "2µs"),
            (5, "5ns"),
            (-90_000_000_000, "-1m30s"),
            (86_400_000_000_000, "24h0m0s"),
        ] {
            assert_eq!(format_duration(n), s);
            assert_eq!(parse_duration(s), Ok(n), "{s}");
        }
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(format_time(1_704_164_645).unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(
            format_micro_time(1_704_164_645, 123_456_789).unwrap(),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05Z").unwrap(),
            (1_704_164_645, 0)
        );
        assert_eq!(
            parse_time("2024-01-02T04:04:05.5+01:00").unwrap(),
            (1_704_164_645, 500_000_000)
        );
        assert_eq!(format_time(GO_ZERO_UNIX).unwrap(), "0001-01-01T00:00:00Z");
    }
}
