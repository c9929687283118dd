//! Pure types and rules: no I/O. Each request field is parsed once into a type
//! that cannot hold an invalid value ("parse, don't validate").

mod action;
mod execution;
mod fields;
mod language;
mod params;
mod phone;
mod tenant;

pub use action::{ActionSpec, ActionTiming, ActionType, ParsedAction, TemplateUse, WhatsappTarget, parse_action_spec};
pub use execution::ExecutionStatus;
pub use fields::{FieldError, Fields};
pub use language::LanguageCode;
pub use params::{Param, TemplateName, is_media_reference};
pub use phone::PhoneE164;
pub use tenant::TenantId;
