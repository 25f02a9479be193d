//! Kubernetes resource quantities ("250m", "64Mi", "1.5", "2e3"): validation and comparison for sidecar resources.

/// Parses a quantity as the API server accepts it and returns its value (cores or bytes), or why it is invalid.
///
/// The value is an `f64`: exact enough to compare a request with its limit, which is all it is used for; the
/// original string is what goes into the pod.
pub fn parse(text: &str) -> Result<f64, String> {
    let s = text.trim();
    if s != text || s.is_empty() {
        return Err("expected a Kubernetes quantity such as 100m, 0.5, 128Mi or 1G".into());
    }
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let mantissa = parse_number(number).ok_or_else(|| format!("{text:?} does not start with a number"))?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let digits = &exp[1..];
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} has a malformed exponent"));
            }
            let power: i32 = digits.parse().map_err(|_| format!("{text:?} has an exponent out of range"))?;
            10f64.powi(power)
        }
        other => {
            return Err(format!("{text:?} has an unknown suffix {other:?} (use m, k, M, G, Ki, Mi, Gi, ...)"));
        }
    };
    Ok(mantissa * scale)
}

/// Like [`parse`], for resources: the value must not be negative.
pub fn parse_resource(text: &str) -> Result<f64, String> {
    let value = parse(text)?;
    if value < 0.0 { Err(format!("{text:?} is negative")) } else { Ok(value) }
}

/// `<sign>? (<digits> | <digits>. | .<digits> | <digits>.<digits>)`
fn parse_number(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    s.parse().ok().or_else(|| format!("{s}0").parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_api_server_accepts() {
        assert_eq!(parse("100m").unwrap(), 0.1);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("0.5").unwrap(), 0.5);
        assert_eq!(parse(".5").unwrap(), 0.5);
        assert_eq!(parse("5.").unwrap(), 5.0);
        assert_eq!(parse("+1").unwrap(), 1.0);
        assert_eq!(parse("128Mi").unwrap(), 128.0 * 1024.0 * 1024.0);
        assert_eq!(parse("1G").unwrap(), 1e9);
        assert_eq!(parse("1Ki").unwrap(), 1024.0);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        assert_eq!(parse("2E-3").unwrap(), 0.002);
        assert_eq!(parse("-1").unwrap(), -1.0);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", " 1", "1 ", "abc", "1.2.3", "1mi", "1KB", "Mi", ".", "1e", "1e+", "1ee2", "1 Gi", "--1", "1,5"]
        {
            assert!(parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(parse_resource("-1").unwrap_err().contains("negative"));
    }
}
