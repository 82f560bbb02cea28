//! CronJobs: the schedule read as upstream reads it (robfig/cron's standard parser, with
//! its error texts), the time zone, the concurrency policy, and the job template checked
//! as a Job's spec is.

use serde_json::Value;

use super::{job_spec, nonnegative, text};
use crate::status::Cause;

const CONCURRENCY: &[&str] = &["Allow", "Forbid", "Replace"];

pub(super) fn cron_job(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let schedule = text(spec, "schedule");
    let time_zone = spec.and_then(|s| s.get("timeZone")).and_then(Value::as_str);
    if schedule.is_empty() {
        causes.push(Cause::required("spec.schedule"));
    } else {
        if let Err(error) = parse(schedule) {
            causes.push(Cause::invalid("spec.schedule", schedule, &error));
        }
        if schedule.contains("TZ") {
            causes.push(Cause::invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonnegative(spec, "startingDeadlineSeconds", "spec", causes);
    if let Some(zone) = time_zone {
        time_zone_causes(zone, causes);
    }
    let policy = text(spec, "concurrencyPolicy");
    if policy.is_empty() {
        causes.push(Cause::required("spec.concurrencyPolicy"));
    } else if !CONCURRENCY.contains(&policy) {
        causes.push(Cause::unsupported(
            "spec.concurrencyPolicy",
            policy,
            CONCURRENCY,
        ));
    }
    let template = spec.and_then(|s| s.get("jobTemplate"));
    let job = template.and_then(|t| t.get("spec"));
    job_spec(job, "spec.jobTemplate.spec", causes);
    if let Some(selector) = job.and_then(|j| j.get("selector")).filter(|s| !s.is_null()) {
        causes.push(Cause::invalid(
            "spec.jobTemplate.spec.selector",
            super::go::label_selector(selector),
            "`selector` will be auto-generated",
        ));
    }
    nonnegative(spec, "successfulJobsHistoryLimit", "spec", causes);
    nonnegative(spec, "failedJobsHistoryLimit", "spec", causes);
}

fn time_zone_causes(zone: &str, causes: &mut Vec<Cause>) {
    let field = "spec.timeZone";
    if zone.is_empty() {
        causes.push(Cause::invalid(
            field,
            zone,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    let part_ok = |part: &str| {
        part != "."
            && part != ".."
            && !part.starts_with('-')
            && (1..=14).contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    };
    if !zone.split('/').all(part_ok) {
        causes.push(Cause::invalid(
            field,
            zone,
            &format!("unknown time zone {zone}"),
        ));
        return;
    }
    if zone.eq_ignore_ascii_case("local") {
        causes.push(Cause::invalid(
            field,
            zone,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
    // Go's LoadLocation: the zone database (where this machine has one).
    let database = std::path::Path::new("/usr/share/zoneinfo");
    if zone != "UTC" && zone != "Local" && database.is_dir() && !database.join(zone).is_file() {
        causes.push(Cause::invalid(
            field,
            zone,
            &format!("unknown time zone {zone}"),
        ));
    }
}

/// A field's bounds and names, as robfig/cron's.
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first_name: u32,
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    first_name: 0,
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
    first_name: 0,
};
const DAYS: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    first_name: 0,
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    first_name: 1,
};
const WEEKDAYS: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    first_name: 0,
};

/// robfig/cron's `ParseStandard`: `Ok` or its error text.
pub(super) fn parse(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        // The zone is the validation's concern (refused above); the rest still parses.
        spec = spec
            .split_once(' ')
            .map(|(_, rest)| rest.trim())
            .unwrap_or("");
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            every if every.starts_with("every ") => {
                let duration = &spec["@every ".len()..];
                if go_duration(duration) {
                    Ok(())
                } else {
                    Err(format!(
                        "failed to parse duration {spec}: time: invalid duration \"{duration}\""
                    ))
                }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (text, bounds) in fields
        .iter()
        .zip([&MINUTES, &HOURS, &DAYS, &MONTHS, &WEEKDAYS])
    {
        for range in text.split(',').filter(|r| !r.is_empty()) {
            range_ok(range, bounds)?;
        }
    }
    Ok(())
}

fn range_ok(expr: &str, bounds: &Bounds) -> Result<(), String> {
    let steps: Vec<&str> = expr.split('/').collect();
    let ends: Vec<&str> = steps[0].split('-').collect();
    let single = ends.len() == 1;
    let (start, mut end) = if ends[0] == "*" || ends[0] == "?" {
        (bounds.min, bounds.max)
    } else {
        let start = int_or_name(ends[0], bounds)?;
        match ends.len() {
            1 => (start, start),
            2 => (start, int_or_name(ends[1], bounds)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match steps.len() {
        1 => 1,
        2 => {
            let step = int(steps[1])?;
            if single {
                end = bounds.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < bounds.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        ));
    }
    if end > bounds.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_or_name(expr: &str, bounds: &Bounds) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + bounds.first_name);
    }
    int(expr)
}

/// Go's `strconv.Atoi` as robfig/cron reports it.
fn int(expr: &str) -> Result<u32, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    let parsed = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| expr.parse::<i64>().ok())
        .flatten();
    match parsed {
        None => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            crate::status::quote(expr)
        )),
        Some(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Some(n) => Ok(n.min(u32::MAX as i64) as u32),
    }
}

/// Go's `time.ParseDuration` accepts it (`1h30m`, `90s`, `1.5h`).
fn go_duration(text: &str) -> bool {
    let text = text.strip_prefix(['+', '-']).unwrap_or(text);
    if text == "0" {
        return true;
    }
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number == 0 {
            return false;
        }
        rest = &rest[number..];
        let Some(unit) = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}
