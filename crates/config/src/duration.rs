//! Durations as operators write them: `15m`, `3.75h`, `500ms`, `1h30m`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The units a duration may be written in, longest suffix first so that `ms` wins over `m`.
const UNITS: [(&str, u128); 5] = [
    ("ms", NANOS_PER_MILLI),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// A span of time in a configuration file.
///
/// Written as one or more `<number><unit>` parts with no spaces between them: the number may
/// have a fraction (`3.75h`), the unit is `ms`, `s`, `m`, `h` or `d`, and parts add up
/// (`1h30m`). A duration is displayed in the compound form with whole units, largest first
/// (`3.75h` is shown as `3h45m`, `90s` as `1m30s`, `0.5s` as `500ms`; zero is `0s`), and the
/// displayed form parses back to the same duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a string is not a duration. The message says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a duration; write a number and a unit (ms, s, m, h, d), such as `15m` or `3.75h`{detail}"
)]
pub struct DurationError {
    input: String,
    detail: &'static str,
}

impl DurationError {
    fn new(input: &str, detail: &'static str) -> Self {
        Self { input: input.to_owned(), detail }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |detail| DurationError::new(input, detail);
        if input.is_empty() {
            return Err(bad(""));
        }
        let mut rest = input;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            let (unit, nanos_per_unit) =
                UNITS.iter().find(|(unit, _)| after.starts_with(unit)).copied().ok_or_else(|| bad(""))?;
            total = total
                .checked_add(part_nanos(number, nanos_per_unit).ok_or_else(|| bad(""))?)
                .ok_or_else(|| bad(" (it is too long)"))?;
            rest = &after[unit.len()..];
        }
        let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| bad(" (it is too long)"))?;
        // The remainder of a division by 10^9 always fits in a u32.
        let nanos = u32::try_from(total % NANOS_PER_SEC).unwrap_or(0);
        Ok(Self(std::time::Duration::new(secs, nanos)))
    }
}

/// `number` (digits with an optional fraction) times a unit, in nanoseconds; digits past the
/// nanosecond are dropped. `None` if `number` is not a number or the result is absurdly large.
fn part_nanos(number: &str, nanos_per_unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || number.ends_with('.') {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut nanos = whole.checked_mul(nanos_per_unit)?;
    let mut scale = nanos_per_unit;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(nanos)
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_nanos();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, nanos_per_unit) in UNITS.iter().rev() {
            let count = rest / nanos_per_unit;
            if count > 0 && *unit != "ms" {
                write!(f, "{count}{unit}")?;
                rest %= nanos_per_unit;
            }
        }
        if rest > 0 {
            let millis = rest / NANOS_PER_MILLI;
            let sub = rest % NANOS_PER_MILLI;
            if sub == 0 {
                write!(f, "{millis}ms")?;
            } else {
                let fraction = format!("{sub:06}");
                write!(f, "{millis}.{}ms", fraction.trim_end_matches('0'))?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `15m` or `3.75h`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            // A bare number (`frequency: 15`) has no unit: say so rather than "invalid type".
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(DurationError::new(&v.to_string(), "")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(DurationError::new(&v.to_string(), "")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(DurationError::new(&v.to_string(), "")))
            }
        }

        d.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Duration {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_units_fractions_and_compounds_operators_write() {
        let table = [
            ("15m", 15 * 60_000),
            ("5m", 5 * 60_000),
            ("3.75h", 3 * 3_600_000 + 45 * 60_000),
            ("30s", 30_000),
            ("500ms", 500),
            ("2d", 2 * 86_400_000),
            ("1h30m", 90 * 60_000),
            ("1d2h3m4s5ms", 86_400_000 + 2 * 3_600_000 + 3 * 60_000 + 4_000 + 5),
            ("0.5s", 500),
            ("0s", 0),
            ("90s", 90_000),
        ];
        for (text, millis) in table {
            assert_eq!(parse(text), Duration::from_millis(millis), "{text}");
        }
        assert_eq!(parse("1.5ms").as_std(), std::time::Duration::from_micros(1500));
    }

    #[test]
    fn rejects_what_is_not_a_duration_and_says_how_to_write_one() {
        for bad in [
            "", "15", "15x", "m", "h1", "1.h", ".5h", "1..5h", "-5m", "1h 30m", " 5m", "5M", "5 m", "1e3s",
            "1.2.3s", "5mm",
        ] {
            let err = bad.parse::<Duration>().expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!("`{bad}` is not a duration; write a number and a unit")),
                "{bad}: {err}"
            );
            assert!(err.contains("such as `15m` or `3.75h`"), "{err}");
        }
    }

    #[test]
    fn absurdly_long_durations_are_errors_not_overflows() {
        let err = "99999999999999999999999999999999999d".parse::<Duration>().unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        let err = "213503982334602d".parse::<Duration>().unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn displays_in_compound_whole_units_that_parse_back() {
        let table = [
            ("15m", "15m"),
            ("3.75h", "3h45m"),
            ("90s", "1m30s"),
            ("0.5s", "500ms"),
            ("1.5ms", "1.5ms"),
            ("0.000001ms", "0.000001ms"),
            ("2d", "2d"),
            ("36h", "1d12h"),
            ("0ms", "0s"),
            ("1h0m1ms", "1h1ms"),
        ];
        for (text, shown) in table {
            let d = parse(text);
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(parse(shown), d, "{shown} parses back");
        }
    }
}
