//! Money as integer minor units of one ISO-4217 currency.

use serde::{Deserialize, Serialize};

pub use iso_currency::Currency;

/// The largest amount, in minor units, that payledger accepts: 2^53 − 1.
///
/// Why this bound and not `i64::MAX`: every amount leaves us as a JSON number, and many
/// merchants' consumers (JavaScript, some JSON libraries) read numbers as IEEE doubles, which
/// are exact only up to 2^53. An amount we cannot hand back exactly is refused up front rather
/// than rounded silently downstream. It is also far above any real payment (9e13 yuan).
pub const AMOUNT_MINOR_MAX: i64 = 9_007_199_254_740_991;

/// An amount of money: `amount_minor` units of the currency's minor unit (1 CNY = 100 fen,
/// 1 JPY = 1 yen) and the ISO-4217 currency.
///
/// Invariant: `1 <= amount_minor <= AMOUNT_MINOR_MAX` and the currency has a minor unit
/// (ISO-4217 defines an exponent), enforced by [`Money::new`]. Deserialisation does not go
/// through `new`, so the aggregate re-checks amounts it receives in commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Integer amount in minor units; positive.
    pub amount_minor: i64,
    /// ISO-4217 alphabetic code, serialised as e.g. `"CNY"`.
    pub currency: Currency,
}

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Zero or negative amount.
    #[error("amount must be a positive integer in minor units, got {0}")]
    NotPositive(i64),
    /// Above [`AMOUNT_MINOR_MAX`].
    #[error("amount {0} exceeds the maximum of {AMOUNT_MINOR_MAX} minor units")]
    TooLarge(i64),
    /// Not an ISO-4217 alphabetic code.
    #[error("unknown currency {0:?}: expected an ISO-4217 code such as \"CNY\"")]
    UnknownCurrency(String),
    /// ISO-4217 defines no minor unit for it (gold, SDR, …): not a payment currency.
    #[error("currency {0} has no minor unit and cannot be used for payments")]
    NoMinorUnit(String),
}

impl Money {
    /// Builds an amount after checking it is positive, within [`AMOUNT_MINOR_MAX`] and in a
    /// currency with a minor unit.
    ///
    /// # Errors
    /// [`MoneyError::NotPositive`], [`MoneyError::TooLarge`], [`MoneyError::NoMinorUnit`].
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor <= 0 {
            return Err(MoneyError::NotPositive(amount_minor));
        }
        if amount_minor > AMOUNT_MINOR_MAX {
            return Err(MoneyError::TooLarge(amount_minor));
        }
        if currency.exponent().is_none() {
            return Err(MoneyError::NoMinorUnit(currency.code().to_string()));
        }
        Ok(Self { amount_minor, currency })
    }

    /// Whether this value satisfies the invariants of [`Money::new`].
    pub fn is_valid(&self) -> bool {
        Money::new(self.amount_minor, self.currency).is_ok()
    }
}

/// Parses an ISO-4217 alphabetic code (upper case, exactly as ISO writes it).
///
/// # Errors
/// [`MoneyError::UnknownCurrency`] for anything that is not a code; [`MoneyError::NoMinorUnit`]
/// for codes without a minor unit (XAU, XDR, …).
pub fn parse_currency(code: &str) -> Result<Currency, MoneyError> {
    let currency = Currency::from_code(code).ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))?;
    if currency.exponent().is_none() {
        return Err(MoneyError::NoMinorUnit(code.to_string()));
    }
    Ok(currency)
}

/// `amount_minor` in major units with the currency's exponent, exactly (no floating point):
/// `format_minor(12345, "CNY")` is `"123.45"`, `format_minor(-5, "USD")` `"-0.05"`,
/// `format_minor(500, "JPY")` `"500"`. A code we do not know, or one without a minor unit, shows
/// the minor units as they are, followed by ` (minor units)`, so nothing is ever shown scaled
/// wrongly.
pub fn format_minor(amount_minor: i64, currency: &str) -> String {
    let Some(exponent) = Currency::from_code(currency).and_then(|c| c.exponent()) else {
        return format!("{amount_minor} (minor units)");
    };
    if exponent == 0 {
        return amount_minor.to_string();
    }
    let scale = 10_u64.pow(u32::from(exponent));
    let magnitude = amount_minor.unsigned_abs();
    let sign = if amount_minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = usize::from(exponent)
    )
}

/// `text` in major units of `currency` (`"123.45"` CNY) as exact minor units (`12345`): digits,
/// at most one `.`, at most the currency's exponent of decimals, no sign, no exponent notation,
/// at most [`AMOUNT_MINOR_MAX`]. Never rounds: more decimals than the currency has is an error.
///
/// # Errors
/// A sentence saying what is wrong, for a person.
pub fn parse_major(text: &str, currency: &str) -> Result<i64, String> {
    let exponent = Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .ok_or_else(|| format!("{currency} has no minor unit"))?;
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
        return Err(format!("{text:?} is not an amount like 12.34"));
    }
    if fraction.len() > usize::from(exponent) {
        return Err(format!("{currency} has {exponent} decimal places; {text:?} has more"));
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(exponent));
    padded
        .parse::<i64>()
        .ok()
        .filter(|v| *v <= AMOUNT_MINOR_MAX)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_units_parse_to_exact_minor_units_and_never_round() {
        assert_eq!(parse_major("123.45", "CNY"), Ok(12_345));
        assert_eq!(parse_major("0.5", "CNY"), Ok(50));
        assert_eq!(parse_major("7", "CNY"), Ok(700));
        assert_eq!(parse_major("500", "JPY"), Ok(500));
        assert_eq!(parse_major("1.234", "BHD"), Ok(1_234));
        assert!(parse_major("1.234", "CNY").is_err(), "would round");
        assert!(parse_major("1.5", "JPY").is_err());
        for bad in ["", "-1", "1e3", "1.", ".5", "1,5", "1.2.3", " 1 2"] {
            assert!(parse_major(bad, "CNY").is_err(), "{bad:?}");
        }
        assert!(parse_major("99999999999999999999", "CNY").is_err());
    }

    #[test]
    fn minor_units_are_shown_with_the_currency_exponent() {
        assert_eq!(format_minor(12_345, "CNY"), "123.45");
        assert_eq!(format_minor(5, "USD"), "0.05");
        assert_eq!(format_minor(-5, "USD"), "-0.05");
        assert_eq!(format_minor(-150, "CNY"), "-1.50");
        assert_eq!(format_minor(500, "JPY"), "500");
        assert_eq!(format_minor(1_234, "BHD"), "1.234");
        assert_eq!(format_minor(i64::MIN, "CNY"), "-92233720368547758.08");
        assert_eq!(format_minor(7, "XAU"), "7 (minor units)");
    }

    #[test]
    fn amount_at_the_limit_is_accepted_and_one_past_is_refused() {
        assert!(Money::new(AMOUNT_MINOR_MAX, Currency::CNY).is_ok());
        assert_eq!(
            Money::new(AMOUNT_MINOR_MAX + 1, Currency::CNY),
            Err(MoneyError::TooLarge(AMOUNT_MINOR_MAX + 1))
        );
    }

    #[test]
    fn zero_and_negative_amounts_are_refused() {
        assert_eq!(Money::new(0, Currency::CNY), Err(MoneyError::NotPositive(0)));
        assert_eq!(Money::new(-1, Currency::USD), Err(MoneyError::NotPositive(-1)));
    }

    #[test]
    fn currency_codes_are_iso_4217_with_a_minor_unit() {
        assert_eq!(parse_currency("CNY"), Ok(Currency::CNY));
        assert_eq!(parse_currency("JPY").map(|c| c.exponent()), Ok(Some(0)));
        assert!(matches!(parse_currency("cny"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(parse_currency("XXY"), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!(parse_currency("XAU"), Err(MoneyError::NoMinorUnit(_))));
    }

    #[test]
    fn money_serialises_as_minor_units_and_code() {
        let m = Money::new(12_345, Currency::CNY).unwrap();
        assert_eq!(
            serde_json::to_value(m).unwrap(),
            serde_json::json!({"amount_minor": 12345, "currency": "CNY"})
        );
    }
}
