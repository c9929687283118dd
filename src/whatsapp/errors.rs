//! Meta's error codes sorted by what actiond does about them (reference §2),
//! by `error.code` and never by HTTP status, which Meta has changed before.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not accepted, and worth trying again with back-off.
    Transient,
    /// 131056: too many messages to this recipient; back off this pair only.
    PairRateLimited,
    /// The sender's token is expired or revoked: hold its sends until it is synced.
    SenderCredentials,
    /// Nothing a retry can fix: fail the execution with Meta's code.
    Permanent,
}

pub fn classify(code: i64) -> ErrorClass {
    match code {
        // Throughput, app and WABA rate limits, temporary downtime, maintenance.
        4 | 80007 | 130429 | 2 | 131000 | 131016 | 133004 | 131057 => ErrorClass::Transient,
        131056 => ErrorClass::PairRateLimited,
        0 | 190 => ErrorClass::SenderCredentials,
        _ => ErrorClass::Permanent,
    }
}

/// Whether Meta's refusal speaks of the access token itself: invalid or
/// expired (0, 190) or lacking a permission (10, 200-299). A refusal to
/// register or sync a sender names the token then, and else the id read.
pub fn concerns_token(code: i64) -> bool {
    matches!(code, 0 | 10 | 190 | 200..=299)
}

/// Meta's error text: its message, and `error_data.details` when it adds something.
pub fn describe(message: &str, details: Option<&str>) -> String {
    match details.map(str::trim).filter(|d| !d.is_empty() && !message.contains(d)) {
        Some(details) => format!("{message}: {details}"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_added_only_when_they_say_more() {
        assert_eq!(describe("Message undeliverable", Some("not on WhatsApp")), "Message undeliverable: not on WhatsApp");
        assert_eq!(describe("Rate limit hit", Some("Rate limit hit")), "Rate limit hit");
        assert_eq!(describe("Rate limit hit", None), "Rate limit hit");
    }

    #[test]
    fn classes_follow_metas_table() {
        for code in [130429, 131000, 131016, 133004, 4, 80007, 2, 131057] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify(131056), ErrorClass::PairRateLimited);
        assert_eq!(classify(190), ErrorClass::SenderCredentials);
        assert_eq!(classify(0), ErrorClass::SenderCredentials);
        for code in [131026, 132000, 132001, 132015, 132016, 131047, 131049, 131050, 100, 368, 131031, 133010] {
            assert_eq!(classify(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn auth_and_permission_codes_concern_the_token() {
        for code in [0, 10, 190, 200, 294, 299] {
            assert!(concerns_token(code), "{code}");
        }
        for code in [100, 33, 300, 131009, 133010] {
            assert!(!concerns_token(code), "{code}");
        }
    }
}
