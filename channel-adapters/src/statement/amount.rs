//! Amount text in major units (yuan, "12.30") to exact minor units (fen, 1230).
//!
//! Channels print amounts as decimal strings in major units. Reconciliation compares them with the
//! ledger's integer minor units, so the conversion is exact: [`rust_decimal::Decimal`] arithmetic,
//! no floating point, and nothing is ever rounded. A value that is not a whole number of minor
//! units is an error for amounts; fees may be fractional (WeChat Pay prints them to 5 decimals).

use payledger_domain::Currency;
use rust_decimal::Decimal;

/// Longest amount text accepted, in bytes. The largest amount payledger accepts
/// (`AMOUNT_MINOR_MAX`, 2^53 − 1 fen) is 18 characters in yuan with a sign; 24 leaves room for
/// WeChat Pay's 5-decimal fees and keeps every value far inside `Decimal`'s 28 digits, so the
/// scaling below cannot overflow.
pub(crate) const AMOUNT_TEXT_BYTES_MAX: usize = 24;

/// Parses a decimal in major units exactly.
///
/// Grammar: an optional `-`, one or more ASCII digits, optionally `.` and one or more digits.
/// No `+`, no thousands separators (no statement sample has them, and "1,234" inside a CSV
/// field would be ambiguous), no exponent, no spaces.
///
/// # Errors
/// A message naming the text when it does not match the grammar or is too long.
pub(crate) fn parse_major(text: &str) -> Result<Decimal, String> {
    if text.is_empty() {
        return Err("empty amount".to_string());
    }
    if text.len() > AMOUNT_TEXT_BYTES_MAX {
        return Err(format!(
            "amount {text:?} is longer than {AMOUNT_TEXT_BYTES_MAX} characters"
        ));
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(format!(
            "amount {text:?} is not a decimal number such as 12.30 (no thousands separators)"
        ));
    }
    Decimal::from_str_exact(text).map_err(|e| format!("amount {text:?}: {e}"))
}

/// `major` (e.g. yuan) expressed in minor units of `currency` (e.g. fen), exactly; possibly
/// fractional.
///
/// # Errors
/// When the currency has no minor unit or the product does not fit a `Decimal` (cannot happen
/// for text accepted by [`parse_major`]).
pub(crate) fn major_to_minor(major: Decimal, currency: Currency) -> Result<Decimal, String> {
    let exponent = currency
        .exponent()
        .ok_or_else(|| format!("currency {} has no minor unit", currency.code()))?;
    let factor = 10_i64
        .checked_pow(u32::from(exponent))
        .map(Decimal::from)
        .ok_or_else(|| format!("currency {} has an unsupported minor unit", currency.code()))?;
    major
        .checked_mul(factor)
        .ok_or_else(|| format!("amount {major} is too large"))
}

/// Parses an amount in major units to a whole number of minor units.
///
/// # Errors
/// Bad text (see [`parse_major`]), or a value that is not a whole number of minor units — e.g.
/// "1.234" yuan (123.4 fen): more decimals than the currency has is refused, never rounded.
/// Trailing zeros are exact and accepted ("1.230" is 123 fen).
pub(crate) fn parse_amount_minor(text: &str, currency: Currency) -> Result<i64, String> {
    let minor = major_to_minor(parse_major(text)?, currency)?;
    if !minor.is_integer() {
        return Err(format!(
            "amount {text:?} has more decimals than {} has ({}): not a whole number of minor units",
            currency.code(),
            currency.exponent().unwrap_or(0)
        ));
    }
    i64::try_from(minor).map_err(|_| format!("amount {text:?} is too large"))
}

/// Parses a fee in major units to exact, possibly fractional, minor units ("0.05940" yuan is
/// 5.94 fen).
///
/// # Errors
/// Bad text (see [`parse_major`]).
pub(crate) fn parse_fee_minor(text: &str, currency: Currency) -> Result<Decimal, String> {
    major_to_minor(parse_major(text)?, currency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_converts_to_fen_exactly() {
        assert_eq!(parse_amount_minor("0.01", Currency::CNY), Ok(1));
        assert_eq!(parse_amount_minor("88.8", Currency::CNY), Ok(8880));
        assert_eq!(parse_amount_minor("100", Currency::CNY), Ok(10_000));
        assert_eq!(parse_amount_minor("1.230", Currency::CNY), Ok(123));
        assert_eq!(parse_amount_minor("-35.80", Currency::CNY), Ok(-3580));
        assert_eq!(
            parse_amount_minor("90071992547409.91", Currency::CNY),
            Ok(9_007_199_254_740_991)
        );
    }

    #[test]
    fn sub_fen_amounts_are_refused_not_rounded() {
        let err = parse_amount_minor("1.234", Currency::CNY).unwrap_err();
        assert!(err.contains("more decimals"), "{err}");
        assert!(parse_amount_minor("0.005", Currency::CNY).is_err());
    }

    #[test]
    fn malformed_amount_text_is_refused() {
        for text in [
            "", "1,234.50", "1.2.3", ".5", "5.", "+1", "1e3", " 1", "--1", "１", "NaN",
        ] {
            assert!(parse_major(text).is_err(), "{text:?} accepted");
        }
        let at_limit = format!("{}.5", "1".repeat(AMOUNT_TEXT_BYTES_MAX - 2));
        assert!(parse_major(&at_limit).is_ok());
        let past_limit = format!("{}.5", "1".repeat(AMOUNT_TEXT_BYTES_MAX - 1));
        assert!(parse_major(&past_limit).is_err());
    }

    #[test]
    fn fees_keep_their_fraction_of_a_fen() {
        assert_eq!(parse_fee_minor("0.05940", Currency::CNY), Ok(Decimal::new(594, 2)));
        assert_eq!(parse_fee_minor("-0.01", Currency::CNY), Ok(Decimal::from(-1)));
        assert_eq!(parse_fee_minor("0.00000", Currency::CNY), Ok(Decimal::ZERO));
    }
}
