//! Go-style durations as NodePass users write them: `500ms`, `30s`, `5m`, `1h30m`, `1.5h`, `0`.
//!
//! Hand-written rather than taken from a crate: NodePass users know the exact Go
//! `time.ParseDuration` spelling (no spaces, no `min`/`sec` words, decimals allowed in every
//! component), and the crates we looked at accept a different, looser language (`5 min`,
//! `1d`). Accepting only what Go accepts keeps URLs portable between implementations. We support
//! the units `ms`, `s`, `m` and `h`; a bare number is refused except `0`. Arithmetic is exact
//! (integer nanoseconds, never floating point), so [`format()`] output parses back to the same value.

use std::time::Duration;

/// Nanoseconds per unit, longest suffix first so `ms` is tried before `m`.
const UNITS: [(&str, u128); 4] = [
    ("ms", 1_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
];

/// What [`parse`] accepts, for error messages.
pub const DURATION_HELP: &str = "a duration such as 500ms, 30s, 5m, 1h30m or 1.5h, or 0";

/// Parse a Go-style duration. The error is a short reason (the caller names the field).
pub fn parse(s: &str) -> Result<Duration, &'static str> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty value");
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("missing unit (ms, s, m or h)")?;
        let (number, after) = rest.split_at(num_len);
        let (unit, ns_per_unit) = UNITS
            .iter()
            .find(|(u, _)| after.starts_with(u))
            .ok_or("unknown unit (use ms, s, m or h)")?;
        total = total
            .checked_add(component(number, *ns_per_unit)?)
            .ok_or("too large")?;
        rest = &after[unit.len()..];
    }
    let nanos = u64::try_from(total).map_err(|_| "too large")?;
    Ok(Duration::from_nanos(nanos))
}

/// `number * ns_per_unit` for a decimal `number` (`1`, `1.5`, `.5`, `2.`), truncated to whole ns.
fn component(number: &str, ns_per_unit: u128) -> Result<u128, &'static str> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err("missing number before the unit");
    }
    if frac.contains('.') {
        return Err("more than one decimal point in a number");
    }
    // 20 digits overflow u64; refusing longer inputs keeps the arithmetic below in range.
    if int.len() > 20 {
        return Err("too large");
    }
    let int_value: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "not a number")?
    };
    let mut value = int_value.checked_mul(ns_per_unit).ok_or("too large")?;
    // Each fractional digit is worth a tenth of the previous one; stop once below 1 ns.
    let mut scale = ns_per_unit;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        value += u128::from(digit - b'0') * scale;
    }
    Ok(value)
}

/// The canonical spelling: `0`, `500ms`, `1.5s`, `1m30s`, `5m`, `1h30m`, `2h0.5s`.
///
/// Hours, minutes and seconds, leaving out zero components. A sub-second remainder is written as
/// a decimal of the seconds when there are whole seconds, else in milliseconds (`1h500ms`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 {
        out += &format!("{s}{}s", fraction(nanos, 9));
    } else if nanos > 0 {
        let (ms, rest) = (nanos / 1_000_000, nanos % 1_000_000);
        out += &format!("{ms}{}ms", fraction(rest, 6));
    }
    out
}

/// `.ddd` for `value` as a fraction with `digits` decimal places, trailing zeros removed.
fn fraction(value: u32, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let s = format!(".{value:0digits$}");
    s.trim_end_matches('0').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_spellings() {
        let cases = [
            ("0", Duration::ZERO),
            ("500ms", ms(500)),
            ("30s", ms(30_000)),
            ("5m", ms(300_000)),
            ("1h30m", ms(5_400_000)),
            ("1.5h", ms(5_400_000)),
            ("0.5s", ms(500)),
            (".5s", ms(500)),
            ("2.s", ms(2000)),
            ("1m30s", ms(90_000)),
            ("0s", Duration::ZERO),
            ("1h1m1s1ms", ms(3_661_001)),
            ("0.000001ms", Duration::from_nanos(1)),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            "",
            "5",
            "1.5",
            "s",
            "-5s",
            "+5s",
            "5 s",
            "5sec",
            "5min",
            "1d",
            "1..5s",
            "1.2.3s",
            ".s",
            "5us",
            "1h 30m",
            "99999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_canonically() {
        let cases = [
            (Duration::ZERO, "0"),
            (ms(500), "500ms"),
            (ms(1500), "1.5s"),
            (ms(90_000), "1m30s"),
            (ms(300_000), "5m"),
            (ms(5_400_000), "1h30m"),
            (ms(3_600_500), "1h500ms"),
            (Duration::from_nanos(1), "0.000001ms"),
            (Duration::from_nanos(1_500_001), "1.500001ms"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want);
        }
    }

    proptest! {
        #[test]
        fn format_parses_back(nanos in 0u64..=u64::MAX) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
