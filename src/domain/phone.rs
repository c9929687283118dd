use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use phonenumber::{PhoneNumber, country};
use regex::{Regex, RegexBuilder};

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
                _ => return Err("may hold only digits, one leading '+', spaces, dots, dashes and parentheses"),
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

    /// Loads libphonenumber's rules on a thread of their own. The crate
    /// loads them when the first number is judged, checking every pattern as
    /// it goes (about 560 M instructions, 70 ms): started with the server,
    /// that is done beside its startup instead of in its first create or execute.
    pub fn load_rules_in_background() {
        let loading = std::thread::Builder::new().name("phone-rules".into()).spawn(|| DATABASE.by_code(&1).is_some());
        if let Err(error) = loading {
            tracing::warn!(%error, "cannot load the phone-number rules ahead: the first number judged loads them");
        }
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
    // Told the region, found here with the patterns compiled below, the
    // parser skips its own search for it with the crate's patterns; the
    // validity check then reuses what that search found.
    let located = locate(digits);
    let region = located.as_ref().and_then(|(_, _, found)| found.meta.id().parse().ok());
    judge_with(digits, region, |number| match &located {
        Some((code, national, found)) if number.country().code() == *code && number.national().to_string() == *national => {
            found.accepts(national)
        }
        _ => is_valid(number),
    })
}

/// The verdict from the crate's parser, told `region` (or finding it), and `is_valid`.
fn judge_with(digits: &str, region: Option<country::Id>, is_valid: impl Fn(&PhoneNumber) -> bool) -> Result<String, &'static str> {
    let parsed = phonenumber::parse(region, format!("+{digits}"))
        .map_err(|_| "is not a phone number with a valid country code; write it in international form, e.g. +12817126508")?;
    if !is_valid(&parsed) {
        return Err("is not a valid phone number for its country code; include the country code");
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string().trim_start_matches('+').to_owned())
}

/// What international digits say before the crate's parser reads them: the
/// first country code their first one to three digits make, the rest
/// (without leading zeros), and the region of that code the rest belongs
/// to. `None` for a non-geographic code or none found: the parser then
/// searches itself.
fn locate(digits: &str) -> Option<(u16, String, Region)> {
    let (code, national) = (1..=3.min(digits.len())).map(|length| digits.split_at(length)).find_map(|(code, national)| {
        code.parse::<u16>().ok().filter(|code| DATABASE.by_code(code).is_some()).map(|code| (code, national))
    })?;
    let national = national.trim_start_matches('0');
    region_of(code, national).map(|found| (code, national.to_owned(), found))
}

/// Compiled patterns kept, as many as the crate's own cache keeps: one
/// can take hundreds of KiB, and all 1,400 of them took 140 MB.
const PATTERNS_KEPT: usize = 100;

/// The metadata's patterns, compiled when used and kept while used lately,
/// by the address of the crate's own pattern (its database is a static that
/// never moves). The crate's cache hashes a pattern's whole text to find it
/// and holds its one process-wide lock through every match: most of the
/// time of judging a number. Here the lock is held only to find the pattern.
static PATTERNS: LazyLock<Mutex<CompiledPatterns>> = LazyLock::new(Default::default);

#[derive(Default)]
struct CompiledPatterns {
    /// Each pattern with when it was last used, on `clock`.
    by_address: HashMap<usize, (Arc<Regex>, u64)>,
    clock: u64,
}

impl CompiledPatterns {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

fn address<T>(pattern: &T) -> usize {
    std::ptr::from_ref(pattern) as usize
}

/// The pattern (its address and text), compiled as the crate compiles it;
/// `None` if it cannot be (the crate checked every pattern's syntax when it
/// loaded them).
fn compiled(key: usize, source: &str) -> Option<Arc<Regex>> {
    let patterns = || PATTERNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    {
        let mut kept = patterns();
        let now = kept.tick();
        if let Some((regex, used)) = kept.by_address.get_mut(&key) {
            *used = now;
            return Some(Arc::clone(regex));
        }
    }
    // Compiled outside the lock: other threads' numbers need not wait for it.
    let regex = Arc::new(RegexBuilder::new(source).ignore_whitespace(true).build().ok()?);
    let mut kept = patterns();
    if kept.by_address.len() >= PATTERNS_KEPT
        && let Some(oldest) = kept.by_address.iter().min_by_key(|(_, (_, used))| *used).map(|(key, _)| *key)
    {
        kept.by_address.remove(&oldest);
    }
    let now = kept.tick();
    kept.by_address.insert(key, (Arc::clone(&regex), now));
    Some(regex)
}

/// Whether the pattern matches from the start of `text`, as the crate's
/// `find(…).start() == 0` does.
fn matches_from_start(key: usize, source: &str, text: &str) -> bool {
    compiled(key, source).is_some_and(|regex| regex.find(text).is_some_and(|found| found.start() == 0))
}

/// The crate's `Descriptor::is_match`: a possible length, and the pattern.
fn describes(descriptor: &Descriptor, national: &str) -> bool {
    let lengths = descriptor.possible_length();
    if !lengths.is_empty() && !lengths.contains(&(national.len() as u16)) {
        return false;
    }
    let pattern = descriptor.national_number();
    matches_from_start(address(pattern), pattern.as_str(), national)
}

/// The descriptions of the region's kinds of number (fixed line, mobile,
/// toll free, …).
fn number_descriptors(meta: &Metadata) -> impl Iterator<Item = &Descriptor> {
    let d = meta.descriptors();
    [
        d.premium_rate(),
        d.toll_free(),
        d.shared_cost(),
        d.voip(),
        d.personal_number(),
        d.pager(),
        d.uan(),
        d.voicemail(),
        d.fixed_line(),
        d.mobile(),
    ]
    .into_iter()
    .flatten()
}

/// The crate's `number_type(meta, national) != Type::Unknown`.
fn is_some_kind(meta: &Metadata, national: &str) -> bool {
    describes(meta.descriptors().general(), national) && number_descriptors(meta).any(|descriptor| describes(descriptor, national))
}

/// The crate's `is_valid`, step for step (its `source_for`, then
/// `number_type`), with the patterns compiled here.
fn is_valid(number: &PhoneNumber) -> bool {
    let national = number.national().to_string();
    region_of(number.country().code(), &national).is_some_and(|found| found.accepts(&national))
}

/// The region whose rules judge a national number, and whether finding it
/// already showed the number to be some kind of number there.
struct Region {
    meta: &'static Metadata,
    of_some_kind: bool,
}

impl Region {
    /// Whether its rules take the national number for some kind of number: the
    /// crate's `number_type(meta, national) != Type::Unknown`, unless already known.
    fn accepts(&self, national: &str) -> bool {
        self.of_some_kind || is_some_kind(self.meta, national)
    }
}

/// The region whose rules judge a national number of country code `code`:
/// the crate's `source_for`.
fn region_of(code: u16, national: &str) -> Option<Region> {
    let regions = DATABASE.region(&code)?;
    let told = |meta: &'static Metadata| Region { meta, of_some_kind: false };
    match regions[..] {
        ["001"] => DATABASE.by_code(&code).and_then(|metas| metas.into_iter().next()).map(told),
        [region] => region.parse::<country::Id>().ok().and_then(|_| DATABASE.by_id(region)).map(told),
        _ => regions.into_iter().filter_map(|region| DATABASE.by_id(region)).find_map(|meta| match meta.leading_digits() {
            Some(leading) => matches_from_start(address(leading), leading.as_str(), national).then(|| told(meta)),
            None => is_some_kind(meta, national).then_some(Region { meta, of_some_kind: true }),
        }),
    }
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

    /// Every region's example numbers (valid by construction), numbers a
    /// digit away from them and pseudo-random ones of every length: each is
    /// judged here exactly as by the crate alone, down to the digits kept.
    #[test]
    fn validity_is_libphonenumbers_verdict() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random_digit = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b'0' + (seed % 10) as u8)
        };
        let (mut judged, mut valid) = (0, 0);
        for meta in DATABASE.iter() {
            let mut candidates = Vec::new();
            let examples = number_descriptors(meta).chain([meta.descriptors().general()]).filter_map(Descriptor::example);
            for example in examples {
                let mut changed: Vec<char> = example.chars().collect();
                if let Some(last) = changed.last_mut() {
                    *last = if *last == '9' { '0' } else { char::from(*last as u8 + 1) };
                }
                let first_changed: String = example.chars().enumerate().map(|(i, c)| if i == 0 { random_digit() } else { c }).collect();
                candidates.extend([example.to_owned(), changed.into_iter().collect(), first_changed, format!("{example}0")]);
                candidates.extend(example.get(..example.len() - 1).map(str::to_owned));
            }
            for length in 2..=14 {
                candidates.push((0..length).map(|_| random_digit()).collect());
            }
            for national in candidates {
                let digits = format!("{}{national}", meta.country_code());
                let verdict = judge(&digits);
                // The crate alone: its parser finds the region, its `is_valid` judges.
                assert_eq!(
                    verdict,
                    judge_with(&digits, None, phonenumber::is_valid),
                    "+{} {national} ({})",
                    meta.country_code(),
                    meta.id()
                );
                judged += 1;
                valid += usize::from(verdict.is_ok());
            }
        }
        // Both verdicts came up often: the comparison covers each.
        assert!(judged > 5_000 && valid > 1_000 && judged - valid > 1_000, "judged {judged}, valid {valid}");
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
