//! Resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`) as the scheduler compares them: CPU in
//! millicores, everything else in whole units (bytes for memory, a count for pods).

/// Parses a quantity into thousandths of its unit (so `100m` CPU is 100 and `1Ki` is 1,024,000),
/// rounding up as Kubernetes does; `None` when it is not a quantity.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() {
        return None;
    }
    let (negative, number) = match number.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| -> Option<i128> {
        if s.is_empty() {
            Some(0)
        } else if s.bytes().all(|b| b.is_ascii_digit()) && s.len() < 30 {
            s.parse().ok()
        } else {
            None
        }
    };
    // The value as a fraction: mantissa / 10^scale.
    let scale = frac.len() as u32;
    let mantissa = digits(whole)?.checked_mul(10i128.checked_pow(scale)?)? + digits(frac)?;
    let (mul, div): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000i128 << 40, 1),
        s if s.starts_with('e') || s.starts_with('E') => {
            let exp: u32 = s[1..].parse().ok()?;
            (1000i128.checked_mul(10i128.checked_pow(exp)?)?, 1)
        }
        _ => return None,
    };
    let scaled = mantissa.checked_mul(mul)? / div;
    let denominator = 10i128.checked_pow(scale)?;
    let value = (scaled + denominator - 1) / denominator;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("1Ki"), Some(1_024_000));
        assert_eq!(milli("128Mi").map(|m| m / 1000), Some(128 << 20));
        assert_eq!(milli("1G").map(|m| m / 1000), Some(1_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("1.5Gi").map(|m| m / 1000), Some(3 << 29));
        assert_eq!(milli("abc"), None);
        assert_eq!(milli("1Q"), None);
    }
}
