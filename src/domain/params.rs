use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// `{{...}}` anywhere in a parameter; the inside must be a variable name.
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{([^{}]*)\}\}").unwrap());
static VARIABLE_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_.]*$").unwrap());
static TEMPLATE_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9_]{1,512}$").unwrap());

/// A WhatsApp template name: lowercase letters, digits and underscores, at most 512.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        if TEMPLATE_NAME.is_match(input) {
            Ok(Self(input.to_owned()))
        } else {
            Err("must be 1-512 lowercase letters, digits or underscores, as WhatsApp names templates")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One template parameter as the action stores it: text WhatsApp accepts, which
/// may hold `{{variable}}` placeholders filled from the call when the action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param(String);

pub const PARAM_MAX_CHARS: usize = 1024;

impl Param {
    pub fn parse(input: &str) -> Result<Self, String> {
        let length = input.chars().count();
        if length == 0 || length > PARAM_MAX_CHARS {
            return Err(format!("must be 1-{PARAM_MAX_CHARS} characters, got {length}"));
        }
        if input.contains(['\n', '\r', '\t']) {
            return Err("must not contain a newline or a tab (WhatsApp rejects them in parameters)".into());
        }
        if input.contains("     ") {
            return Err("must not contain more than 4 consecutive spaces (WhatsApp rejects them)".into());
        }
        for captures in PLACEHOLDER.captures_iter(input) {
            let name = captures[1].trim();
            if !VARIABLE_NAME.is_match(name) {
                return Err(format!(
                    "has a placeholder '{{{{{}}}}}' whose name is not a variable name (letters, digits, '_' and '.', not starting with a digit)",
                    &captures[1]
                ));
            }
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn has_variables(&self) -> bool {
        PLACEHOLDER.is_match(&self.0)
    }

    /// The names of its `{{variables}}`, in order, repeats included.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        PLACEHOLDER.captures_iter(&self.0).filter_map(|captures| captures.get(1)).map(|name| name.as_str().trim())
    }

    /// The parameter with each `{{variable}}` filled from the call's variables,
    /// or the names of those the call did not give.
    pub fn render(&self, variables: &std::collections::HashMap<String, String>) -> Result<String, Vec<String>> {
        let mut missing = Vec::new();
        let rendered = PLACEHOLDER.replace_all(&self.0, |captures: &regex::Captures<'_>| {
            let name = captures[1].trim();
            variables.get(name).cloned().unwrap_or_else(|| {
                missing.push(name.to_owned());
                String::new()
            })
        });
        if missing.is_empty() { Ok(rendered.into_owned()) } else { Err(missing) }
    }
}

/// A media header parameter is an `https://` URL or a numeric media id from
/// Meta's media upload. A value still holding a `{{variable}}` is judged when the
/// call fills it in; only a literal `http://` or other scheme is refused up front.
pub fn is_media_reference(param: &Param) -> bool {
    let text = param.as_str();
    // A URL's scheme is read in any letter case (RFC 3986).
    let https = text.get(..HTTPS.len()).is_some_and(|scheme| scheme.eq_ignore_ascii_case(HTTPS));
    if param.has_variables() {
        return https || text.starts_with("{{");
    }
    (https && text.len() > HTTPS.len() && !text.contains(' ')) || text.chars().all(|c| c.is_ascii_digit())
}

const HTTPS: &str = "https://";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_follow_whatsapp_rules() {
        assert!(TemplateName::parse("order_update_2").is_ok());
        for bad in ["", "Order", "order-update", "order update", &"a".repeat(513)] {
            assert!(TemplateName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TemplateName::parse(&"a".repeat(512)).is_ok());
    }

    #[test]
    fn params_follow_whatsapp_text_rules() {
        assert!(Param::parse("Ana").is_ok());
        assert!(Param::parse("four    spaces").is_ok());
        assert!(Param::parse(&"x".repeat(1024)).is_ok());
        for bad in ["", "a\nb", "a\tb", "five     spaces", &"x".repeat(1025)] {
            assert!(Param::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn params_name_their_variables() {
        let param = Param::parse("Hi {{customer_name}}, order {{ order.id }}").unwrap();
        let none = std::collections::HashMap::new();
        assert_eq!(param.render(&none), Err(vec!["customer_name".to_owned(), "order.id".to_owned()]));
        assert!(Param::parse("{{1bad}}").is_err());
        assert!(Param::parse("{{}}").is_err());
        assert!(!Param::parse("plain").unwrap().has_variables());
    }

    #[test]
    fn render_fills_variables_and_names_the_missing() {
        let param = Param::parse("Hi {{ name }}, order {{order.id}}").unwrap();
        let mut variables = std::collections::HashMap::new();
        variables.insert("name".to_owned(), "Ana".to_owned());
        assert_eq!(param.render(&variables), Err(vec!["order.id".to_owned()]));
        variables.insert("order.id".to_owned(), "A-1".to_owned());
        assert_eq!(param.render(&variables).unwrap(), "Hi Ana, order A-1");
        assert_eq!(Param::parse("plain").unwrap().render(&variables).unwrap(), "plain");
    }

    #[test]
    fn media_references_are_https_urls_or_ids() {
        let media = |s: &str| is_media_reference(&Param::parse(s).unwrap());
        assert!(media("https://cdn.example.com/a.jpg"));
        assert!(media("HTTPS://cdn.example.com/a.jpg"));
        assert!(media("1234567890"));
        assert!(media("{{image_url}}"));
        assert!(!media("http://cdn.example.com/a.jpg"));
        assert!(!media("ftp://x"));
        assert!(!media("https://"));
        assert!(!media("abc"));
    }
}
