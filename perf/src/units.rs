//! Units on the command line: byte sizes with binary suffixes (`4k`, `1M`,
//! the same parser as the transport ID's `size:` key, from nvme-trid),
//! durations (`30s`, `500ms`), and sizes printed back.

#![forbid(unsafe_code)]

pub use nvme_trid::{format_size, parse_size};

/// Parse a duration: `30` or `30s` (seconds), `500ms`, `100us`; at least
/// one millisecond, at most a day.
pub fn parse_duration(input: &str) -> Result<std::time::Duration, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!(
            "'{input}' is not a duration; give a whole number with s, ms or us, e.g. 30s, 500ms"
        )
    })?;
    let d = match unit {
        "" | "s" => std::time::Duration::from_secs(n),
        "ms" => std::time::Duration::from_millis(n),
        "us" => std::time::Duration::from_micros(n),
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{input}'; use s, ms or us, e.g. 30s, 500ms"
            ));
        }
    };
    if d < std::time::Duration::from_millis(1) || d > std::time::Duration::from_secs(86_400) {
        return Err(format!(
            "'{input}' is out of range; give at least 1ms and at most 86400s"
        ));
    }
    Ok(d)
}

/// `21474836480` → `20.0 GiB`: one decimal in the largest unit that fits.
pub fn format_size_approx(bytes: u64) -> String {
    const UNITS: [(u32, &str); 5] = [
        (50, "PiB"),
        (40, "TiB"),
        (30, "GiB"),
        (20, "MiB"),
        (10, "KiB"),
    ];
    for (shift, name) in UNITS {
        if bytes >= 1u64 << shift {
            return format!("{:.1} {name}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_s_ms_and_us_within_bounds() {
        use std::time::Duration;
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("10us").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
        assert!(
            parse_duration("5m")
                .unwrap_err()
                .contains("unknown unit 'm'")
        );
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn approximate_sizes_take_one_decimal_in_the_largest_unit() {
        assert_eq!(format_size_approx(20 << 30), "20.0 GiB");
        assert_eq!(format_size_approx(1536), "1.5 KiB");
        assert_eq!(format_size_approx(100), "100 B");
        assert_eq!(format_size_approx(u64::MAX), "16384.0 PiB");
    }
}
