//! Cron schedules as upstream's CronJob reads them (the standard five fields of
//! robfig/cron: minute, hour, day of month, month, day of week; lists, ranges, steps,
//! month and weekday names, `?`, and the `@hourly`-style macros), evaluated in a time zone.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Both day fields restricted: a day matches if either does (cron's rule).
    either_day: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses a schedule; the error says what is wrong, in upstream's spirit.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"))
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {text}",
                fields.len()
            ));
        }
        let days_of_month = field(fields[2], 1, 31, &[])?;
        let mut days_of_week = field(fields[4], 0, 7, WEEKDAYS)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        let star = |f: &str| f.starts_with('*') || f == "?";
        Ok(Schedule {
            minutes: field(fields[0], 0, 59, &[])?,
            hours: field(fields[1], 0, 23, &[])?,
            days_of_month,
            months: field(fields[3], 1, 12, MONTHS)?,
            days_of_week,
            either_day: !star(fields[2]) && !star(fields[4]),
        })
    }

    fn day_matches(&self, day: DateTime) -> bool {
        let dom = self.days_of_month & (1 << day.day()) != 0;
        let dow = self.days_of_week & (1 << day.weekday().to_sunday_zero_offset()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first time after `after` (exclusive, to the minute) the schedule fires in
    /// `zone`; `None` if it never does within five years (e.g. February 30th).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let start = zone.to_datetime(after);
        // The next whole minute.
        let mut day = start.date();
        let mut first_minute = start.hour() as i64 * 60 + start.minute() as i64 + 1;
        for _ in 0..(5 * 366) {
            let midnight = day.to_datetime(jiff::civil::time(0, 0, 0, 0));
            if self.months & (1 << midnight.month()) != 0 && self.day_matches(midnight) {
                for minute_of_day in first_minute..(24 * 60) {
                    let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute) != 0 {
                        let local = midnight
                            .checked_add((hour as i32).hours().minutes(minute as i32))
                            .ok()?;
                        // A local time skipped by a DST change resolves forward, as Go's does.
                        let fired = zone.to_ambiguous_timestamp(local).compatible().ok()?;
                        if fired > after {
                            return Some(fired);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
            first_minute = 0;
        }
        None
    }
}

/// One field as a bit set: `*`, `?`, `a`, `a-b`, `*/n`, `a-b/n`, `a/n`, names, lists.
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("failed to parse int from {step}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" | "?" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a, names, min)?, value(b, names, min)?),
                None => {
                    let a = value(range, names, min)?;
                    // `a/n` runs from a to the end.
                    (a, if part.contains('/') { max } else { a })
                }
            },
        };
        if low < min || high > max || low > high {
            return Err(format!(
                "end of range ({high}) above maximum ({max}), or beginning ({low}) below minimum ({min}): {part}"
            ));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, names: &[&str], min: u32) -> Result<u32, String> {
    if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(index as u32 + min);
    }
    text.parse()
        .map_err(|_| format!("failed to parse int from {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(at(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn fields_and_macros() {
        assert_eq!(
            next("*/5 * * * *", "2026-01-01T00:03:20Z"),
            "2026-01-01T00:05:00Z"
        );
        assert_eq!(
            next("*/5 * * * *", "2026-01-01T00:05:00Z"),
            "2026-01-01T00:10:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-01-01T03:00:00Z"),
            "2026-01-02T02:30:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-01-01T03:00:00Z"),
            "2026-01-01T04:00:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-03-01T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        // 2026-01-01 is a Thursday: the next Monday is the 5th.
        assert_eq!(
            next("0 9 * * mon", "2026-01-01T00:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 7", "2026-01-01T00:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
        // Both day fields restricted: either matches (the 2nd, or the Monday the 5th).
        assert_eq!(
            next("0 0 2 * 1", "2026-01-02T01:00:00Z"),
            "2026-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 12 1-3/2 * *", "2026-01-01T13:00:00Z"),
            "2026-01-03T12:00:00Z"
        );
    }

    #[test]
    fn time_zones() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let fired = Schedule::parse("0 9 * * *")
            .unwrap()
            .next_after(at("2026-07-01T00:00:00Z"), &berlin)
            .unwrap();
        assert_eq!(fired.to_string(), "2026-07-01T07:00:00Z");
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(Schedule::parse("* * * *").unwrap_err().contains("5 fields"));
        assert!(Schedule::parse("61 * * * *")
            .unwrap_err()
            .contains("above maximum"));
        assert!(Schedule::parse("@sometimes").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
        assert!(Schedule::parse("0 0 30 2 *")
            .unwrap()
            .next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC)
            .is_none());
    }
}
