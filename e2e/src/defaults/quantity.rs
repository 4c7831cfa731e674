//! Resource quantities in the canonical form the API server writes them in
//! (`k8s.io/apimachinery/pkg/api/resource/quantity.go`: `ParseQuantity`, then
//! `CanonicalizeBytes` when marshalled): `0.5` is `500m`, `1024Mi` is `1Gi`, `1000m` is
//! `1`, `1.5Gi` is `1536Mi`, `100M` stays, `2e3` stays (decimal-exponent quantities keep
//! their notation).
//!
//! The rules: the suffix picks the format (decimal SI `n u m k M G T P E`, binary SI
//! `Ki Mi Gi Ti Pi Ei`, or a decimal exponent `e3`/`E-3`); the value is rounded up (away
//! from zero) to nano precision and capped at ±(2⁶³−1). A binary quantity is written with a
//! binary suffix only if it is an integer of magnitude 1024 or more, otherwise as decimal
//! SI. Decimal quantities move every factor of ten into the exponent, then lower the
//! exponent to a multiple of three (`SI suffix`, or `e<exp>` for the exponent format).
//! Zero is `0`. Values in a `ResourceList` (a container's requests and limits, a quota's
//! hard limits, a claim's requested storage) are first rounded up to milli precision
//! (`pkg/apis/core/v1/defaults.go SetDefaults_ResourceList`).
//!
//! Strings that are not quantities are left as they are (Kubernetes rejects them in
//! validation, which this server does not do), and so are those with more digits than fit
//! in 128 bits.

use serde_json::Value;

/// How a quantity is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `k`, `M`, `m`, … or no suffix.
    DecimalSi,
    /// `Ki`, `Mi`, …
    BinarySi,
    /// `e3`, `E-6`.
    DecimalExponent,
}

/// An exact decimal: `mantissa × 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    scale: i32,
}

const NANO: i32 = -9;
const MILLI: i32 = -3;
const MAX: i128 = i64::MAX as i128;

const DECIMAL_SUFFIXES: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
const BINARY_SUFFIXES: &[(&str, u32)] = &[
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// The canonical spelling of a quantity given as a JSON string or number, or `None` when it
/// is not a quantity.
pub fn canonical(value: &Value) -> Option<String> {
    canonical_at(value, NANO)
}

/// Like [`canonical`], for a value of a `ResourceList` (rounded up to milli precision).
pub fn canonical_in_resource_list(value: &Value) -> Option<String> {
    canonical_at(value, MILLI)
}

fn canonical_at(value: &Value, precision: i32) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    let (decimal, format) = parse(&text)?;
    Some(format_canonical(round_up(decimal, precision), format))
}

/// `ParseQuantity`: sign, digits, fraction, suffix; rounded up to nanos and capped.
fn parse(text: &str) -> Option<(Decimal, Format)> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let integer_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (integer, rest) = rest.split_at(integer_end);
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            after.split_at(end)
        }
        None => ("", rest),
    };
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{integer}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = digits.parse().ok()?;
    if negative {
        mantissa = -mantissa;
    }
    let fraction_digits = i32::try_from(fraction.len()).ok()?;
    let (decimal, format) =
        if let Some((_, exponent)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
            let decimal = Decimal {
                mantissa,
                scale: exponent - fraction_digits,
            };
            (decimal, Format::DecimalSi)
        } else if let Some((_, bits)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
            let decimal = Decimal {
                mantissa: mantissa.checked_mul(1_i128 << bits)?,
                scale: -fraction_digits,
            };
            (decimal, Format::BinarySi)
        } else {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())?
                .parse::<i32>()
                .ok()?;
            let decimal = Decimal {
                mantissa,
                scale: exponent.checked_sub(fraction_digits)?,
            };
            (decimal, Format::DecimalExponent)
        };
    // Kubernetes keeps values that fit its int64 fast path as they are; the others go
    // through inf.Dec, rounded up to nanos and capped.
    let fast = match format {
        Format::BinarySi => {
            fraction.is_empty()
                && 15 - i32::try_from(integer.len()).ok()? - bits_precision(suffix) > 0
                && i64::try_from(decimal.mantissa).is_ok()
        }
        _ => digits.len() <= 18 && decimal.scale >= NANO,
    };
    if fast {
        Some((decimal, format))
    } else {
        Some((cap(round_up(decimal, NANO)), format))
    }
}

/// `exponent * 3 / 10` of a binary suffix (the decimal digits it takes, roughly).
fn bits_precision(suffix: &str) -> i32 {
    BINARY_SUFFIXES
        .iter()
        .find(|(s, _)| *s == suffix)
        .map_or(0, |(_, bits)| i32::try_from(bits * 3 / 10).unwrap_or(0))
}

/// Rounds away from zero to at least `10^precision`.
fn round_up(decimal: Decimal, precision: i32) -> Decimal {
    if decimal.scale >= precision {
        return decimal;
    }
    let Some(divisor) = 10_i128.checked_pow((precision - decimal.scale).unsigned_abs()) else {
        // Far below the precision: the smallest step away from zero.
        return Decimal {
            mantissa: decimal.mantissa.signum(),
            scale: precision,
        };
    };
    let mut mantissa = decimal.mantissa / divisor;
    if decimal.mantissa % divisor != 0 {
        mantissa += decimal.mantissa.signum();
    }
    Decimal {
        mantissa,
        scale: precision,
    }
}

/// Caps the magnitude at 2⁶³−1 (`maxAllowed`).
fn cap(decimal: Decimal) -> Decimal {
    let too_big = match decimal.scale {
        scale if scale <= 0 => {
            let unit = 10_i128.pow(scale.unsigned_abs());
            decimal.mantissa.abs() / unit > MAX
                || (decimal.mantissa.abs() / unit == MAX && decimal.mantissa.abs() % unit != 0)
        }
        scale => 10_i128
            .checked_pow(scale.unsigned_abs())
            .and_then(|unit| decimal.mantissa.abs().checked_mul(unit))
            .is_none_or(|value| value > MAX),
    };
    if too_big {
        Decimal {
            mantissa: MAX * decimal.mantissa.signum(),
            scale: 0,
        }
    } else {
        decimal
    }
}

/// The integer value, if the decimal is one.
fn as_integer(decimal: Decimal) -> Option<i128> {
    if decimal.scale >= 0 {
        decimal
            .mantissa
            .checked_mul(10_i128.checked_pow(decimal.scale.unsigned_abs())?)
    } else {
        let unit = 10_i128.checked_pow(decimal.scale.unsigned_abs())?;
        (decimal.mantissa % unit == 0).then_some(decimal.mantissa / unit)
    }
}

/// `CanonicalizeBytes`.
fn format_canonical(decimal: Decimal, format: Format) -> String {
    if decimal.mantissa == 0 {
        return "0".into();
    }
    if format == Format::BinarySi
        && let Some(value) = as_integer(decimal).filter(|v| v.abs() >= 1024)
    {
        let mut amount = value;
        let mut index = 0;
        while amount % 1024 == 0 && index < BINARY_SUFFIXES.len() {
            amount /= 1024;
            index += 1;
        }
        let suffix = index.checked_sub(1).map_or("", |i| BINARY_SUFFIXES[i].0);
        return format!("{amount}{suffix}");
    }
    let (mut amount, mut exponent) = (decimal.mantissa, decimal.scale);
    while amount % 10 == 0 {
        amount /= 10;
        exponent += 1;
    }
    match exponent % 3 {
        1 | -2 => {
            amount *= 10;
            exponent -= 1;
        }
        2 | -1 => {
            amount *= 100;
            exponent -= 2;
        }
        _ => {}
    }
    let suffix = match format {
        Format::DecimalExponent if exponent == 0 => String::new(),
        Format::DecimalExponent => format!("e{exponent}"),
        _ => DECIMAL_SUFFIXES
            .iter()
            .find(|(_, e)| *e == exponent)
            .map_or_else(|| format!("e{exponent}"), |(s, _)| (*s).to_owned()),
    };
    format!("{amount}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_forms() {
        let table: &[(&str, &str)] = &[
            // decimal SI
            ("0.5", "500m"),
            ("1000m", "1"),
            ("100M", "100M"),
            ("1000M", "1G"),
            ("0.1", "100m"),
            ("1.5", "1500m"),
            ("100m", "100m"),
            ("1080m", "1080m"),
            ("1.08", "1080m"),
            ("50k", "50k"),
            ("8.1k", "8100"),
            ("7.123456M", "7123456"),
            ("40.1T", "40100G"),
            ("1.", "1"),
            (".001", "1m"),
            ("1.G", "1G"),
            ("+2", "2"),
            ("-9.01", "-9010m"),
            ("0", "0"),
            ("0.000", "0"),
            ("00", "0"),
            // rounding up to nanos, and the cap
            ("3.001n", "4n"),
            ("0.0000000001", "1n"),
            ("0.00000012345", "124n"),
            ("-3.001n", "-4n"),
            ("12E", "12E"),
            ("1e30", "1e30"),
            ("9223372036854775808", "9223372036854775807"),
            // binary SI
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1Ki", "1Ki"),
            ("300Mi", "300Mi"),
            ("307200Ki", "300Mi"),
            ("1025Ki", "1025Ki"),
            ("0.5Ki", "512"),
            (".001Ki", "1024m"),
            (".000000000001Ki", "2n"),
            ("100.035Ki", "102435840m"),
            ("0.5Mi", "512Ki"),
            ("9Ei", "9223372036854775807"),
            // decimal exponent
            ("2e3", "2e3"),
            ("1E6", "1e6"),
            ("1.2e3", "1200"),
            ("1.3E+6", "1300e3"),
            ("1E-3", "1e-3"),
            ("80e-3", "80e-3"),
            ("0.5e0", "500e-3"),
            ("1.1E-9", "2e-9"),
            ("300e6", "300e6"),
        ];
        for (input, expected) in table {
            assert_eq!(
                canonical(&json!(input)).as_deref(),
                Some(*expected),
                "{input}"
            );
        }
    }

    #[test]
    fn numbers_and_resource_lists() {
        assert_eq!(canonical(&json!(0.5)).as_deref(), Some("500m"));
        assert_eq!(canonical(&json!(2)).as_deref(), Some("2"));
        assert_eq!(canonical(&json!("100u")).as_deref(), Some("100u"));
        assert_eq!(
            canonical_in_resource_list(&json!("100u")).as_deref(),
            Some("1m")
        );
        assert_eq!(
            canonical_in_resource_list(&json!("1.0001")).as_deref(),
            Some("1001m")
        );
        assert_eq!(
            canonical_in_resource_list(&json!("1Gi")).as_deref(),
            Some("1Gi")
        );
    }

    #[test]
    fn not_quantities() {
        for input in [
            json!("aoeu"),
            json!("1.1.M"),
            json!("0.1mi"),
            json!("1i"),
            json!("-3.01e-"),
            json!(" 1"),
            json!("1 "),
            json!(""),
            json!("."),
            json!(true),
            json!(null),
        ] {
            assert_eq!(canonical(&input), None, "{input}");
        }
    }
}
