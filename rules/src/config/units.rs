//! Durations (`50ms`, `10s`, `1h30m`) and byte sizes (`64MiB`, `1GB`).

use std::time::Duration;

const NANOS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];
const DAY_NANOS: u128 = 86_400_000_000_000;

pub(crate) const DURATION_HINT: &str =
    "a bare number is ambiguous: give a unit, e.g. 50ms, 10s, 2m, 1h (units: ms, s, m, h, d)";

/// Parses `<number><unit>` terms, optionally several (`1h30m`). Decimals are
/// allowed (`1.5s`); a number without a unit is rejected because operators
/// disagree on whether it means seconds or milliseconds.
pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let after = after.trim_start();
        if num.is_empty() {
            return Err(format!("invalid duration \"{s}\": expected a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(if tail.is_empty() && total == 0 && num_len == s.len() {
                DURATION_HINT.to_owned()
            } else {
                format!("invalid duration \"{s}\": missing unit after {num}")
            });
        }
        let per = unit_nanos(unit).ok_or_else(|| {
            format!("invalid duration \"{s}\": unknown unit \"{unit}\" (use ms, s, m, h or d)")
        })?;
        let nanos = scaled(num, per).ok_or_else(|| format!("invalid duration \"{s}\""))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("duration \"{s}\" is too large"))?;
        rest = tail.trim_start();
    }
    let nanos = u64::try_from(total).map_err(|_| format!("duration \"{s}\" is too large"))?;
    Ok(Duration::from_nanos(nanos))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    if unit == "d" {
        return Some(DAY_NANOS);
    }
    NANOS.iter().find(|(u, _)| *u == unit).map(|(_, n)| *n)
}

/// `num` (digits, at most one '.') times `per`, exactly, truncating below 1ns.
fn scaled(num: &str, per: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    // More than 38 digits overflows u128 anyway; fractional digits past
    // nanosecond precision are dropped.
    if int.len() > 30 {
        return None;
    }
    let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut result = int_val.checked_mul(per)?;
    let frac = frac.get(..frac.len().min(18)).unwrap_or("");
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        result = result.checked_add(digits.checked_mul(per)? / scale)?;
    }
    Some(result)
}

/// Shortest exact rendering, for `pgshift check` output.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (unit, per) in [
        ("d", DAY_NANOS),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

const SIZE_UNITS: [(&str, u64); 5] = [
    ("", 1),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
];

/// Parses a byte size. Like postgresql.conf, `kB`/`MB`/`GB` are multiples of
/// 1024, the same as `KiB`/`MiB`/`GiB`; a bare number is bytes.
pub(crate) fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let num_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(num_len);
    if num.is_empty() {
        return Err(format!(
            "invalid size \"{s}\": expected a whole number with an optional unit, e.g. 1024, 512KiB, 64MiB, 1GiB"
        ));
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let prefix = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let per = SIZE_UNITS
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, n)| *n)
        .filter(|_| !(prefix.is_empty() && unit == "ib"))
        .ok_or_else(|| {
            format!("invalid size \"{s}\": unknown unit (use B, KiB, MiB, GiB, TiB; kB/MB/GB are 1024-based)")
        })?;
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| format!("size \"{s}\" is too large"))
}

/// Largest binary unit that divides the size exactly.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, per) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes != 0 && bytes.is_multiple_of(per) {
            return format!("{}{unit}", bytes / per);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn bad_durations() {
        assert!(parse_duration("10").unwrap_err().contains("ambiguous"));
        assert!(parse_duration("1.5").unwrap_err().contains("ambiguous"));
        assert!(parse_duration("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("1s2").unwrap_err().contains("missing unit"));
        assert!(parse_duration("99999999999999999999999999999999999h")
            .unwrap_err()
            .contains("invalid"));
        assert!(parse_duration("9999999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(50)), "50ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("8kB").unwrap(), 8192);
        assert_eq!(parse_size("100 B").unwrap(), 100);
        assert_eq!(parse_size("2m").unwrap(), 2 << 20);
    }

    #[test]
    fn bad_sizes() {
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("1PB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("1iB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_format() {
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 10), "3KiB");
        assert_eq!(format_size(1000), "1000B");
    }
}
