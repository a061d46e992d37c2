//! Byte sizes with binary suffixes (`4k`, `128K`, `1M`, `1G`, `512b`), as
//! the `size` key of an emulated controller takes them, and as the tools
//! take them on their own command lines (nvme-perf's `-o`): one parser, so
//! a size means the same wherever it is written.

#![forbid(unsafe_code)]

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("M").is_err());
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
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(1536), "1536 B");
        assert_eq!(format_size(3 << 20), "3 MiB");
    }
}
