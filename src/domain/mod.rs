//! Pure types and rules: no I/O. Each request field is parsed once into a type
//! that cannot hold an invalid value ("parse, don't validate").

mod action;
mod execution;
mod fields;
mod language;
mod params;
mod phone;
mod tenant;

pub use action::{
    ActionSpec, ActionTiming, ActionType, DESCRIPTION_MAX_CHARS, NAME_MAX_CHARS, ParsedAction, TemplateUse, WhatsappTarget,
    parse_action_spec,
};
pub use execution::ExecutionStatus;
pub use fields::{FieldError, Fields, NUL_MESSAGE, char_len, holds_nul};
pub use language::{LanguageCode, SUPPORTED as LANGUAGE_CODES};
pub use params::{PARAM_MAX_CHARS, Param, TemplateName, is_media_reference};
pub use phone::PhoneE164;
pub use tenant::TenantId;
