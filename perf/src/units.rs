//! Byte sizes with binary suffixes (`4k`, `128K`, `1M`, `1G`, `512b`), as
//! given to `-o` and to the emulated controller's `size:` key.

#![forbid(unsafe_code)]

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing was given.
    #[error(
        "empty size; give a number of bytes with an optional suffix, e.g. 4096, 4k, 128K, 1M, 1G"
    )]
    Empty,
    /// The number part is not a number.
    #[error(
        "'{0}' is not a size; give a number of bytes with an optional suffix, e.g. 4096, 4k, 128K, 1M, 1G"
    )]
    NotANumber(String),
    /// An unknown suffix.
    #[error(
        "unknown size suffix '{suffix}' in '{input}'; use k, m, g or t (powers of 1024), or none for bytes"
    )]
    BadSuffix {
        /// The whole input.
        input: String,
        /// The suffix found.
        suffix: String,
    },
    /// The value does not fit in 64 bits.
    #[error("size '{0}' is too large")]
    Overflow(String),
    /// Zero bytes.
    #[error("size must be larger than zero")]
    Zero,
}

/// Parse `4096`, `4k`, `4K`, `4KiB`, `128k`, `1M`, `1G`, `1T` (binary
/// multiples) into bytes. Zero is refused.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::NotANumber(input.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::Overflow(input.to_string()))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(SizeError::BadSuffix {
                input: input.to_string(),
                suffix: suffix.to_string(),
            });
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(input.to_string()))?;
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    Ok(bytes)
}

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

/// `4096` → `4 KiB`, `1536` → `1536 B`: the largest exact binary unit.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, name) in UNITS {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_binary_multiples_in_either_case() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("512b"), Ok(512));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_reason() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("0"), Err(SizeError::Zero));
        assert!(matches!(parse_size("k"), Err(SizeError::NotANumber(_))));
        assert!(matches!(parse_size("4x"), Err(SizeError::BadSuffix { .. })));
        assert!(matches!(parse_size("-4k"), Err(SizeError::NotANumber(_))));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("17000000T"),
            Err(SizeError::Overflow(_))
        ));
        let msg = parse_size("4x").unwrap_err().to_string();
        assert!(msg.contains("'x'") && msg.contains("k, m, g"), "{msg}");
    }

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
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(1536), "1536 B");
        assert_eq!(format_size(3 << 20), "3 MiB");
        assert_eq!(format_size_approx(20 << 30), "20.0 GiB");
        assert_eq!(format_size_approx(1536), "1.5 KiB");
        assert_eq!(format_size_approx(100), "100 B");
        assert_eq!(format_size_approx(u64::MAX), "16384.0 PiB");
    }
}
