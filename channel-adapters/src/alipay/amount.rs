//! Yuan strings at the wire, fen everywhere else.
//!
//! Alipay's `Price` fields (`total_amount`, `refund_amount`, `refund_fee`, …) are decimal strings in
//! yuan with at most two decimals, e.g. `"12.34"`, in the range `[0.01, 100000000]`
//! (<https://opendocs.alipay.com/apis/api_1/alipay.trade.precreate>, field `total_amount`).
//! payledger keeps integer fen ([`Money::amount_minor`] of CNY). The conversion is exact both ways
//! and never rounds: a string that does not denote a whole number of fen is an error.

use payledger_domain::{Currency, Money};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// The largest amount Alipay accepts in one trade or refund: 100 000 000 yuan, in fen.
pub const ALIPAY_AMOUNT_FEN_MAX: i64 = 10_000_000_000;

/// The longest yuan string we parse, in characters. Far above any real amount (Alipay's own
/// `Price(11)`), it bounds the work done on hostile input.
pub const YUAN_STRING_CHARS_MAX: usize = 32;

/// Why an amount could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal of the form `digits[.d[d]]` (signs, exponents, spaces, `_` refused).
    #[error("amount {0:?} is not a yuan amount of the form 123.45")]
    Syntax(String),
    /// More than two decimals: not a whole number of fen, and we never round.
    #[error("amount {0:?} has more than 2 decimals; fen cannot be split")]
    TooPrecise(String),
    /// Negative.
    #[error("amount {0} is negative")]
    Negative(String),
    /// Does not fit in `i64` fen or exceeds [`YUAN_STRING_CHARS_MAX`].
    #[error("amount {0:?} is out of range")]
    Overflow(String),
}

/// Fen to Alipay's yuan string with exactly two decimals: `1` → `"0.01"`, `1234` → `"12.34"`,
/// `100` → `"1.00"`.
///
/// # Errors
/// [`AmountError::Negative`] for a negative amount.
pub fn fen_to_yuan(amount_fen: i64) -> Result<String, AmountError> {
    if amount_fen < 0 {
        return Err(AmountError::Negative(amount_fen.to_string()));
    }
    // Scale 2 keeps trailing zeros in Display ("1.00"), which is the form Alipay documents.
    Ok(Decimal::new(amount_fen, 2).to_string())
}

/// Alipay's yuan string to fen, exactly: `"0.01"` → `1`, `"12.3"` → `1230`, `"12"` → `1200`.
///
/// Accepts only ASCII `digits[.d[d]]`; `"0.00"` gives `0` (callers needing a payment amount use
/// [`yuan_to_money`]).
///
/// # Errors
/// [`AmountError::Syntax`] (`"1e3"`, `"+1"`, `" 1"`, `"1_000"`, `".5"`, `"1."`),
/// [`AmountError::TooPrecise`] (`"12.345"`), [`AmountError::Negative`] (`"-1"`),
/// [`AmountError::Overflow`].
pub fn yuan_to_fen(yuan: &str) -> Result<i64, AmountError> {
    if yuan.len() > YUAN_STRING_CHARS_MAX {
        return Err(AmountError::Overflow(
            yuan.chars().take(YUAN_STRING_CHARS_MAX).collect(),
        ));
    }
    if let Some(rest) = yuan.strip_prefix('-') {
        if is_plain_decimal(rest) {
            return Err(AmountError::Negative(yuan.to_string()));
        }
        return Err(AmountError::Syntax(yuan.to_string()));
    }
    if !is_plain_decimal(yuan) {
        return Err(AmountError::Syntax(yuan.to_string()));
    }
    let decimals = yuan.split_once('.').map_or(0, |(_, d)| d.len());
    if decimals > 2 {
        return Err(AmountError::TooPrecise(yuan.to_string()));
    }
    // from_str_exact refuses to round where `from_str` would.
    let value = Decimal::from_str_exact(yuan).map_err(|_| AmountError::Overflow(yuan.to_string()))?;
    let fen = value
        .checked_mul(Decimal::ONE_HUNDRED)
        .ok_or_else(|| AmountError::Overflow(yuan.to_string()))?;
    // Two decimals times 100 is whole; checked rather than assumed.
    if !fen.fract().is_zero() {
        return Err(AmountError::TooPrecise(yuan.to_string()));
    }
    fen.to_i64().ok_or_else(|| AmountError::Overflow(yuan.to_string()))
}

/// Alipay's yuan string to a CNY [`Money`] (positive, at most `AMOUNT_MINOR_MAX` fen).
///
/// # Errors
/// [`yuan_to_fen`]'s errors; [`AmountError::Overflow`] when `Money::new` refuses the amount
/// (zero included, reported as out of range).
pub fn yuan_to_money(yuan: &str) -> Result<Money, AmountError> {
    let fen = yuan_to_fen(yuan)?;
    Money::new(fen, Currency::CNY).map_err(|_| AmountError::Overflow(yuan.to_string()))
}

/// `digits` or `digits.digits`, ASCII only, each part non-empty.
fn is_plain_decimal(s: &str) -> bool {
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        None => all_digits(s),
        Some((int, frac)) => all_digits(int) && all_digits(frac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payledger_domain::AMOUNT_MINOR_MAX;
    use proptest::prelude::*;

    #[test]
    fn documented_shapes_convert_exactly() {
        assert_eq!(yuan_to_fen("0.01"), Ok(1));
        assert_eq!(yuan_to_fen("12.3"), Ok(1230));
        assert_eq!(yuan_to_fen("12.30"), Ok(1230));
        assert_eq!(yuan_to_fen("12"), Ok(1200));
        assert_eq!(yuan_to_fen("100000000.00"), Ok(ALIPAY_AMOUNT_FEN_MAX));
        assert_eq!(yuan_to_fen("0.00"), Ok(0));
        assert_eq!(fen_to_yuan(1).as_deref(), Ok("0.01"));
        assert_eq!(fen_to_yuan(1230).as_deref(), Ok("12.30"));
        assert_eq!(fen_to_yuan(100).as_deref(), Ok("1.00"));
        assert_eq!(fen_to_yuan(0).as_deref(), Ok("0.00"));
    }

    #[test]
    fn a_third_decimal_is_refused_never_rounded() {
        assert_eq!(yuan_to_fen("12.345"), Err(AmountError::TooPrecise("12.345".into())));
        assert_eq!(yuan_to_fen("0.001"), Err(AmountError::TooPrecise("0.001".into())));
        assert_eq!(yuan_to_fen("1.000"), Err(AmountError::TooPrecise("1.000".into())));
    }

    #[test]
    fn negatives_exponents_and_decorations_are_refused() {
        assert_eq!(yuan_to_fen("-1"), Err(AmountError::Negative("-1".into())));
        assert_eq!(yuan_to_fen("-0.01"), Err(AmountError::Negative("-0.01".into())));
        for bad in [
            "1e3", "1E3", "+1", " 1", "1 ", "1_000", ".5", "1.", "", "1.2.3", "0x10", "１", "--1", "NaN",
        ] {
            assert_eq!(yuan_to_fen(bad), Err(AmountError::Syntax(bad.into())), "{bad:?}");
        }
        assert_eq!(fen_to_yuan(-1), Err(AmountError::Negative("-1".into())));
    }

    #[test]
    fn amounts_past_i64_fen_overflow() {
        // i64::MAX fen is 92233720368547758.07 yuan.
        assert_eq!(yuan_to_fen("92233720368547758.07"), Ok(i64::MAX));
        assert!(matches!(
            yuan_to_fen("92233720368547758.08"),
            Err(AmountError::Overflow(_))
        ));
        assert!(matches!(yuan_to_fen(&"9".repeat(40)), Err(AmountError::Overflow(_))));
    }

    #[test]
    fn money_needs_a_positive_amount_within_the_domain_limit() {
        assert_eq!(yuan_to_money("0.01"), Ok(Money::new(1, Currency::CNY).unwrap()));
        assert!(matches!(yuan_to_money("0.00"), Err(AmountError::Overflow(_))));
        let max = fen_to_yuan(AMOUNT_MINOR_MAX).unwrap();
        assert!(yuan_to_money(&max).is_ok());
        let past = fen_to_yuan(AMOUNT_MINOR_MAX + 1).unwrap();
        assert!(matches!(yuan_to_money(&past), Err(AmountError::Overflow(_))));
    }

    proptest! {
        #[test]
        fn fen_round_trips_through_yuan(fen in 0..=i64::MAX) {
            let yuan = fen_to_yuan(fen).unwrap();
            prop_assert_eq!(yuan_to_fen(&yuan), Ok(fen));
        }

        #[test]
        fn yuan_with_up_to_two_decimals_is_exact(int in 0u64..1_000_000_000_000, frac in 0u32..100, two in any::<bool>()) {
            let (s, fen) = if two || frac % 10 != 0 {
                (format!("{int}.{frac:02}"), int as i64 * 100 + i64::from(frac))
            } else {
                (format!("{int}.{}", frac / 10), int as i64 * 100 + i64::from(frac))
            };
            prop_assert_eq!(yuan_to_fen(&s), Ok(fen));
        }

        #[test]
        fn three_or_more_decimals_are_always_refused(int in 0u64..1_000_000, frac in "[0-9]{3,8}") {
            let s = format!("{int}.{frac}");
            prop_assert_eq!(yuan_to_fen(&s), Err(AmountError::TooPrecise(s.clone())));
        }

        #[test]
        fn anything_but_digits_and_one_dot_is_refused(s in "[^0-9.]{1,3}[0-9]{0,4}") {
            prop_assert!(yuan_to_fen(&s).is_err());
        }
    }
}
