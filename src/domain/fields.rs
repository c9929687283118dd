//! Reads fields out of a JSON object while collecting every violation, so a
//! request is answered with all of its problems at once rather than the first.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error_code::ErrorCode;

/// One violation, tied to the request field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `webhook.to`.
    pub field: String,
    /// Stable snake_case identifier of the violation.
    pub code: ErrorCode,
    /// One line a person can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }

    /// Adds this violation to `errors` unless its field is already named
    /// there: a field is reported once, by the first check that refused it.
    pub fn add_once(self, errors: &mut Vec<FieldError>) {
        if !errors.iter().any(|known| known.field == self.field) {
            errors.push(self);
        }
    }
}

/// Why one item of a list was refused: its code and message.
pub type ItemError = (ErrorCode, String);

/// A cursor over one JSON object that records violations as it reads.
pub struct Fields<'a, 'e> {
    object: &'a Map<String, Value>,
    prefix: String,
    errors: &'e mut Vec<FieldError>,
}

impl<'a, 'e> Fields<'a, 'e> {
    pub fn new(object: &'a Map<String, Value>, errors: &'e mut Vec<FieldError>) -> Self {
        Self { object, prefix: String::new(), errors }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}.{name}", self.prefix) }
    }

    pub fn error(&mut self, name: &str, code: ErrorCode, message: impl Into<String>) {
        let field = self.path(name);
        self.errors.push(FieldError::new(field, code, message));
    }

    /// Whether `name` is given (JSON `null` counts as absent).
    pub fn object_has(&self, name: &str) -> bool {
        self.present(name).is_some()
    }

    /// The value of `name`, treating JSON `null` like an absent field.
    fn present(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    fn wrong_type(&mut self, name: &str, expected: &str) {
        self.error(name, ErrorCode::InvalidType, format!("must be {expected}"));
    }

    pub fn required_str(&mut self, name: &str) -> Option<&'a str> {
        match self.present(name) {
            None => {
                self.error(name, ErrorCode::MissingField, "is required");
                None
            }
            Some(_) => self.optional_str(name),
        }
    }

    pub fn optional_str(&mut self, name: &str) -> Option<&'a str> {
        match self.present(name)? {
            Value::String(text) if holds_nul(text) => {
                self.error(name, ErrorCode::InvalidCharacter, NUL_MESSAGE);
                None
            }
            Value::String(text) => Some(text),
            _ => {
                self.wrong_type(name, "a string");
                None
            }
        }
    }

    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.present(name)? {
            Value::Bool(flag) => Some(*flag),
            _ => {
                self.wrong_type(name, "a boolean");
                None
            }
        }
    }

    /// A list of strings; `None` when absent, or when it or any item has the
    /// wrong type (each error recorded), so no count is taken of a partial list.
    pub fn optional_str_list(&mut self, name: &str) -> Option<Vec<&'a str>> {
        self.optional_list(name, Ok)
    }

    /// A list of strings, each judged by `item`: `None` when absent, or when
    /// the list or any item is refused. Every refusal is recorded at
    /// `name[index]`, in the items' order.
    pub fn optional_list<T>(&mut self, name: &str, mut item: impl FnMut(&'a str) -> Result<T, ItemError>) -> Option<Vec<T>> {
        match self.present(name)? {
            Value::Array(items) => {
                let mut accepted = Vec::with_capacity(items.len());
                for (index, value) in items.iter().enumerate() {
                    let judged = match value {
                        Value::String(text) if holds_nul(text) => Err((ErrorCode::InvalidCharacter, NUL_MESSAGE.to_owned())),
                        Value::String(text) => item(text),
                        _ => Err((ErrorCode::InvalidType, "must be a string".to_owned())),
                    };
                    match judged {
                        Ok(value) => accepted.push(value),
                        Err((code, message)) => self.error(&format!("{name}[{index}]"), code, message),
                    }
                }
                (accepted.len() == items.len()).then_some(accepted)
            }
            _ => {
                self.wrong_type(name, "an array of strings");
                None
            }
        }
    }

    /// A nested object, read with the same error list and a longer path.
    pub fn required_object(&mut self, name: &str) -> Option<Fields<'a, '_>> {
        match self.present(name) {
            None => {
                self.error(name, ErrorCode::MissingField, "is required");
                None
            }
            Some(Value::Object(object)) => {
                let prefix = self.path(name);
                Some(Fields { object, prefix, errors: self.errors })
            }
            Some(_) => {
                self.wrong_type(name, "an object");
                None
            }
        }
    }
}

/// Why a text holding U+0000 is refused: no text field may hold it, since
/// PostgreSQL cannot store it, and a request must mean the same on either
/// database.
pub const NUL_MESSAGE: &str = "must not hold the NUL character (U+0000)";

pub fn holds_nul(text: &str) -> bool {
    text.contains('\0')
}

/// A text's length in characters, the unit every length rule of the API uses.
pub fn char_len(text: &str) -> usize {
    text.chars().count()
}
