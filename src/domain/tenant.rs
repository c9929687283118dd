use std::fmt;

/// The tenant every request acts for: the token's `org_id`, else its `sub`
/// (one that is blank or holds NUL counts as absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        (!id.trim().is_empty() && !super::holds_nul(&id)).then_some(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
