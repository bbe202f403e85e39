//! Formatting of timestamps for people, without reading any clock.

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC, such as
/// `2026-02-27T03:45:00.000Z`. Every answer about an object carries two of these, so the digits
/// are written directly rather than through `format!`'s padding machinery.
pub fn format_rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    push_padded(&mut out, year.unsigned_abs(), 4);
    out.push('-');
    push_padded(&mut out, u64::from(month), 2);
    out.push('-');
    push_padded(&mut out, u64::from(day), 2);
    out.push('T');
    push_padded(&mut out, rem / 3600, 2);
    out.push(':');
    push_padded(&mut out, (rem % 3600) / 60, 2);
    out.push(':');
    push_padded(&mut out, rem % 60, 2);
    out.push('.');
    push_padded(&mut out, ms % 1000, 3);
    out.push('Z');
    out
}

/// Appends `n` in decimal, with leading zeros up to `width` digits (more digits if it has them).
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in digits.len() - start..width {
        out.push('0');
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(1_772_163_900_000), "2026-02-27T03:45:00.000Z");
        assert_eq!(format_rfc3339_millis(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(format_rfc3339_millis(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
        // Past year 9999 the year takes the digits it needs, as before.
        assert_eq!(format_rfc3339_millis(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }
}
