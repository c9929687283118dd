use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// libphonenumber's verdicts on the numbers it judged lately, by their
/// digits: judging runs a regex per number type and was a sixth of a
/// create's time, while a tenant's senders (and often its recipients)
/// repeat. Forgotten all at once when this many are kept.
static VERDICTS: LazyLock<Mutex<HashMap<String, Result<String, &'static str>>>> = LazyLock::new(Default::default);
const VERDICTS_KEPT: usize = 4096;

/// A phone number valid by libphonenumber's rules, kept as E.164 digits
/// without the leading `+` (`12817126508`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses a number in international form. Digits, one optional leading `+`,
    /// and spaces, dashes, dots and parentheses are accepted. The number is always
    /// read as international: a national number is rejected, never given a guessed
    /// country code (Meta would prepend the sender's, reaching someone else).
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let trimmed = input.trim();
        let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let mut digits = String::with_capacity(unsigned.len());
        for c in unsigned.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '(' | ')' | '.' => {}
                _ => return Err("may hold only digits, one leading '+', spaces, dashes and parentheses"),
            }
        }
        if digits.is_empty() {
            return Err("must be a phone number in international form, e.g. +12817126508");
        }
        if digits.len() > 15 {
            return Err("has more than the 15 digits E.164 allows");
        }
        let verdicts = || VERDICTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(verdict) = verdicts().get(&digits) {
            return verdict.clone().map(Self);
        }
        // Judged outside the lock: other threads' numbers need not wait for it.
        let verdict = judge(&digits);
        let mut kept = verdicts();
        if kept.len() >= VERDICTS_KEPT {
            kept.clear();
        }
        kept.insert(digits, verdict.clone());
        verdict.map(Self)
    }

    /// E.164 digits without `+`, as stored and returned by the API.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// `+` and the digits, as sent to Meta so it never guesses a country.
    pub fn international(&self) -> String {
        format!("+{}", self.0)
    }
}

/// libphonenumber's verdict on international digits: the E.164 digits, or why not.
fn judge(digits: &str) -> Result<String, &'static str> {
    let parsed = phonenumber::parse(None, format!("+{digits}"))
        .map_err(|_| "is not a phone number with a valid country code; write it in international form, e.g. +12817126508")?;
    if !phonenumber::is_valid(&parsed) {
        return Err("is not a valid phone number for its country code; include the country code");
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string().trim_start_matches('+').to_owned())
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_international_forms_and_stores_digits() {
        for input in ["12817126508", "+12817126508", "+1 (281) 712-6508", " +1-281-712-6508 ", "+44 20 7946 0958"] {
            let phone = PhoneE164::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(phone.digits().chars().all(|c| c.is_ascii_digit()), "{input}");
        }
        assert_eq!(PhoneE164::parse("+1 (281) 712-6508").unwrap().digits(), "12817126508");
        assert_eq!(PhoneE164::parse("+44 20 7946 0958").unwrap().international(), "+442079460958");
    }

    #[test]
    fn rejects_numbers_without_a_country_code_or_with_junk() {
        for input in ["", "+", "2817126508", "0044 20 7946 0958", "12345", "+1 281 712 650a", "++12817126508", "1234567890123456"] {
            assert!(PhoneE164::parse(input).is_err(), "{input:?} should be rejected");
        }
    }

    #[test]
    fn a_remembered_verdict_is_the_same_verdict() {
        for input in ["+1 (281) 712-6508", "2817126508", "+1 281 555 0000"] {
            let first = PhoneE164::parse(input);
            assert_eq!(PhoneE164::parse(input), first, "{input}");
            let digits: String = input.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(first.map(|phone| phone.0), judge(&digits), "{input}: as judged afresh");
        }
    }
}
