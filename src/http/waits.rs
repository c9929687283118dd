//! How many `?wait` requests each tenant holds open on this replica: at most
//! `ACTIOND_MAX_WAITS_PER_TENANT`, so one tenant cannot tie up a replica's
//! connections and memory. The map holds only tenants with a wait open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::ApiError;
use crate::domain::TenantId;

pub struct WaitLimits {
    limit: u32,
    open: Mutex<HashMap<String, u32>>,
}

/// One open wait, given back when dropped.
pub struct WaitPermit {
    limits: Arc<WaitLimits>,
    tenant: String,
}

impl WaitLimits {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self { limit, open: Mutex::new(HashMap::new()) })
    }

    /// A permit for a request that will hold its answer for `wait`: none
    /// needed without one; 429 `too_many_waits` when the tenant has no more.
    pub fn hold(self: &Arc<Self>, tenant: &TenantId, wait: Option<Duration>) -> Result<Option<WaitPermit>, ApiError> {
        wait.filter(|wait| !wait.is_zero()).map(|_| self.acquire(tenant)).transpose()
    }

    fn acquire(self: &Arc<Self>, tenant: &TenantId) -> Result<WaitPermit, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(tenant.as_str().to_owned()).or_default();
        if *count >= self.limit {
            return Err(ApiError::too_many_waits(self.limit));
        }
        *count += 1;
        Ok(WaitPermit { limits: Arc::clone(self), tenant: tenant.as_str().to_owned() })
    }
}

impl Drop for WaitPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_tenant_and_given_back() {
        let limits = WaitLimits::new(2);
        let (ours, theirs) = (TenantId::new("ours").unwrap(), TenantId::new("theirs").unwrap());
        let first = limits.acquire(&ours).unwrap();
        let _second = limits.acquire(&ours).unwrap();
        assert!(limits.acquire(&ours).is_err(), "a third is refused");
        assert!(limits.acquire(&theirs).is_ok(), "another tenant has its own count");
        drop(first);
        assert!(limits.acquire(&ours).is_ok(), "a finished wait gives its permit back");
        assert!(limits.open.lock().unwrap().get("theirs").is_none(), "a tenant with no wait open leaves the map");
    }
}
