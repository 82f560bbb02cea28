//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) as integers, and Go durations
//! (`1m30s`) as upstream's flags write them.
//!
//! CPU is compared in millicores and everything else in whole units, as upstream's
//! `resource.Quantity.MilliValue()` / `Value()` do (both round up): the scheduler fits
//! pods with these, the kubelet sets cgroup limits and the downward API, the quota code
//! sums usage.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// The quantity in thousandths of a unit, rounded up (upstream's `MilliValue`).
pub fn parse_milli(text: &str) -> Result<i64, QuantityError> {
    let err = || QuantityError(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{frac}");
    let mantissa: i128 = digits.parse().map_err(|_| err())?;
    // value = mantissa / 10^frac.len() * base^exp; kept as num/den to round once.
    let mut num: i128 = mantissa * 1000;
    let mut den: i128 = 10i128.pow(frac.len() as u32);
    let (binary, exp10): (Option<u32>, i32) = match suffix {
        "" => (None, 0),
        "Ki" => (Some(10), 0),
        "Mi" => (Some(20), 0),
        "Gi" => (Some(30), 0),
        "Ti" => (Some(40), 0),
        "Pi" => (Some(50), 0),
        "Ei" => (Some(60), 0),
        "n" => (None, -9),
        "u" => (None, -6),
        "m" => (None, -3),
        "k" => (None, 3),
        "M" => (None, 6),
        "G" => (None, 9),
        "T" => (None, 12),
        "P" => (None, 15),
        "E" => (None, 18),
        other => {
            let exp = other
                .strip_prefix(['e', 'E'])
                .ok_or_else(err)?
                .parse::<i32>()
                .map_err(|_| err())?;
            (None, exp)
        }
    };
    if let Some(shift) = binary {
        num = num.checked_mul(1i128 << shift).ok_or_else(err)?;
    }
    if !(-30..=30).contains(&exp10) {
        return Err(err());
    }
    if exp10 >= 0 {
        num = num.checked_mul(10i128.pow(exp10 as u32)).ok_or_else(err)?;
    } else {
        den = den
            .checked_mul(10i128.pow((-exp10) as u32))
            .ok_or_else(err)?;
    }
    let mut milli = (num + den - 1) / den;
    if negative {
        // Rounding up a negative number moves it towards zero.
        milli = -(num / den);
    }
    Ok(milli.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// The quantity in whole units, rounded up (upstream's `Value`).
pub fn parse_value(text: &str) -> Result<i64, QuantityError> {
    let milli = parse_milli(text)?;
    Ok(if milli >= 0 {
        milli / 1000 + i64::from(milli % 1000 != 0)
    } else {
        milli / 1000
    })
}

/// Parses `1s`, `500ms`, `2m`, `1h`, `1m30s`, as Go's durations are written (upstream's
/// flags and configuration files take them so). A bare number has no unit and is refused.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h)"))?;
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: invalid number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        total +=
            std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.0001"), Ok(1));
        assert_eq!(parse_milli("2e3"), Ok(2_000_000));
        assert_eq!(parse_milli("500u"), Ok(1));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse_value("1Ki"), Ok(1024));
        assert_eq!(parse_value("128Mi"), Ok(128 << 20));
        assert_eq!(parse_value("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_value("1G"), Ok(1_000_000_000));
        assert_eq!(parse_value("110"), Ok(110));
        assert_eq!(parse_value("1500m"), Ok(2));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_milli("").is_err());
        assert!(parse_milli("abc").is_err());
        assert!(parse_milli("1Qi").is_err());
        assert!(parse_milli("1..2").is_err());
    }
}

/// Thousandths of a unit written as upstream writes a sum of decimal quantities: whole
/// units with an SI suffix when exact (`2`, `3k`), else millis (`500m`).
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    format_decimal(milli / 1000)
}

/// Whole units (bytes) written with the largest binary suffix that divides them exactly
/// (`128Mi`), as memory sums are written; decimal otherwise.
pub fn format_binary(value: i64) -> String {
    if value % 1024 != 0 {
        return format_decimal(value);
    }
    with_suffix(value, 1024, &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
}

fn format_decimal(value: i64) -> String {
    with_suffix(value, 1000, &["k", "M", "G", "T", "P", "E"])
}

/// `value` divided by `base` as often as it divides exactly, with the matching suffix.
fn with_suffix(value: i64, base: i64, suffixes: &[&str]) -> String {
    let mut scaled = value;
    let mut suffix = "";
    for next in suffixes {
        if scaled == 0 || scaled % base != 0 {
            break;
        }
        scaled /= base;
        suffix = next;
    }
    format!("{scaled}{suffix}")
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn sums_are_written_as_upstream_writes_them() {
        assert_eq!(format_milli(500), "500m");
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_milli(3_000_000), "3k");
        assert_eq!(format_milli(0), "0");
        assert_eq!(format_binary(128 * 1024 * 1024), "128Mi");
        assert_eq!(format_binary(1536 * 1024), "1536Ki");
        assert_eq!(format_binary(1_000_000_000), "1G");
        assert_eq!(format_binary(1000), "1k");
        assert_eq!(format_binary(7), "7");
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
    }
}
