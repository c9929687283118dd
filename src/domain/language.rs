use std::fmt;

/// The template language codes Meta documents: the 71 of its canonical page and
/// the 40 regional codes added later (reference §6).
pub const SUPPORTED: &[&str] = &[
    "af", "sq", "ar", "az", "bn", "bg", "ca", "zh_CN", "zh_HK", "zh_TW", "hr", "cs", "da", "nl", "en", "en_GB", "en_US", "et", "fil", "fi",
    "fr", "ka", "de", "el", "gu", "ha", "he", "hi", "hu", "id", "ga", "it", "ja", "kn", "kk", "rw_RW", "ko", "ky_KG", "lo", "lv", "lt",
    "mk", "ms", "ml", "mr", "nb", "fa", "pl", "pt_BR", "pt_PT", "pa", "ro", "ru", "sr", "sk", "sl", "es", "es_AR", "es_ES", "es_MX", "sw",
    "sv", "ta", "te", "th", "tr", "uk", "ur", "uz", "vi", "zu", "ar_EG", "ar_AE", "ar_LB", "ar_MA", "ar_QA", "be_BY", "bn_IN", "prs_AF",
    "nl_BE", "en_AE", "en_AU", "en_CA", "en_GH", "en_IE", "en_IN", "en_JM", "en_MY", "en_NZ", "en_QA", "en_SG", "en_UG", "en_ZA", "fr_BE",
    "fr_CA", "fr_CH", "fr_CI", "fr_MA", "de_AT", "de_CH", "ps_AF", "si_LK", "es_CL", "es_CO", "es_CR", "es_DO", "es_EC", "es_HN", "es_PA",
    "es_PE", "es_UY",
];

/// One of WhatsApp's template language codes, spelled exactly as Meta spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LanguageCode(&'static str);

impl LanguageCode {
    pub const DEFAULT: &'static str = "en";

    /// Exact match first; otherwise a case or separator slip (`en-us`, `PT_br`)
    /// maps to Meta's spelling, because the send must match it exactly.
    pub fn parse(input: &str) -> Result<Self, String> {
        let normalized = input.trim().replace('-', "_");
        SUPPORTED
            .iter()
            .find(|code| **code == normalized)
            .or_else(|| SUPPORTED.iter().find(|code| code.eq_ignore_ascii_case(&normalized)))
            .map(|code| Self(code))
            .ok_or_else(|| format!("'{input}' is not a WhatsApp template language code; use one such as en, en_US, pt_BR, es_MX"))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_metas_list() {
        assert_eq!(SUPPORTED.len(), 111);
        assert_eq!(LanguageCode::parse("en").unwrap().as_str(), "en");
        assert_eq!(LanguageCode::parse("pt_BR").unwrap().as_str(), "pt_BR");
        assert_eq!(LanguageCode::parse("en-us").unwrap().as_str(), "en_US");
        assert_eq!(LanguageCode::parse("ZH_cn").unwrap().as_str(), "zh_CN");
    }

    #[test]
    fn rejects_unknown_codes() {
        for input in ["", "english", "en_XX", "xx", "pt_br_x"] {
            assert!(LanguageCode::parse(input).is_err(), "{input:?}");
        }
    }
}
