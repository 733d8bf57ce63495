//! The memory request bodies may hold: one budget across all connections (`--body-memory`, 256 MiB
//! by default) and a quarter of it per client address. A body takes from it what it declares before
//! a byte is read, what it sends as it arrives, and, once complete, what parsing it will build (the
//! walk in `unique_keys` measures that first), and gives it back when its request is over — for an
//! inference request, when the answer has been relayed. Past the budget: 503 with `Retry-After`; a
//! body that could never fit: 413. So neither stalled uploads nor small bodies that parse into huge
//! trees (`[0,0,0,…]` is 35 times its size as a `serde_json::Value`) can spend the hub's memory.
//!
//! This machine's addresses are counted per address only with `limit_loopback` (see `hub::quota`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::error::HubError;

#[derive(Default)]
struct Used {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The budget; cheap to clone.
#[derive(Clone)]
pub struct BodyBudget {
    total: usize,
    per_address: usize,
    limit_loopback: bool,
    used: Arc<Mutex<Used>>,
}

/// Bytes held against the budget by one request; dropping it gives them back.
pub struct BodyHold {
    budget: Option<BodyBudget>,
    address: Option<IpAddr>,
    held: usize,
}

impl BodyBudget {
    pub fn new(total: usize, limit_loopback: bool) -> Self {
        BodyBudget { total, per_address: (total / 4).max(1), limit_loopback, used: Arc::default() }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty hold for a request from `address`.
    pub fn hold(&self, address: Option<IpAddr>) -> BodyHold {
        let address = super::quota::per_address(address, self.limit_loopback);
        BodyHold { budget: Some(self.clone()), address, held: 0 }
    }
}

impl BodyHold {
    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A hold that counts nothing (no budget configured).
    pub fn none() -> BodyHold {
        BodyHold { budget: None, address: None, held: 0 }
    }

    /// Holds `bytes` in all, or refuses: 413 when they could never fit, 503 when others hold the
    /// room now.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), HubError> {
        let Some(budget) = &self.budget else { return Ok(()) };
        if bytes <= self.held {
            return Ok(());
        }
        let ceiling = if self.address.is_some() { budget.per_address } else { budget.total };
        if bytes > ceiling {
            return Err(HubError::BodyTooLarge { bytes, budget: ceiling });
        }
        let more = bytes - self.held;
        let mut used = budget.used();
        let by_address = self.address.map(|a| used.per_address.get(&a).copied().unwrap_or(0));
        if used.total + more > budget.total || by_address.is_some_and(|n| n + more > budget.per_address) {
            let what = if by_address.is_some_and(|n| n + more > budget.per_address) {
                "this address already holds its share of the memory for request bodies (a quarter of --body-memory)"
            } else {
                "it holds as many request bodies as its memory for them allows (--body-memory)"
            };
            return Err(HubError::Capacity { what: what.into() });
        }
        used.total += more;
        if let Some(a) = self.address {
            *used.per_address.entry(a).or_insert(0) += more;
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        let Some(budget) = &self.budget else { return };
        if self.held == 0 {
            return;
        }
        let mut used = budget.used();
        used.total = used.total.saturating_sub(self.held);
        if let Some(a) = self.address {
            if let Some(n) = used.per_address.get_mut(&a) {
                *n = n.saturating_sub(self.held);
                if *n == 0 {
                    used.per_address.remove(&a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_share_per_address_one_budget_in_all_and_given_back() {
        let budget = BodyBudget::new(400, false);
        let mut a = budget.hold(ip("10.0.0.1"));
        a.grow_to(60).unwrap();
        a.grow_to(100).unwrap();
        let mut a2 = budget.hold(ip("10.0.0.1"));
        assert!(matches!(a2.grow_to(1), Err(HubError::Capacity { .. })), "the address has its share");
        assert!(matches!(a2.grow_to(101), Err(HubError::BodyTooLarge { .. })), "never fits an address");
        let mut others: Vec<BodyHold> = (2..5).map(|i| budget.hold(ip(&format!("10.0.0.{i}")))).collect();
        for h in &mut others {
            h.grow_to(100).unwrap();
        }
        let mut local = budget.hold(ip("127.0.0.1"));
        assert!(matches!(local.grow_to(1), Err(HubError::Capacity { .. })), "the total binds everyone");
        drop(a);
        local.grow_to(100).unwrap();
        assert!(local.grow_to(101).is_err());
        drop(local);
        drop(others);
        assert_eq!(budget.used().total, 0);
        assert!(budget.used().per_address.is_empty());
    }
}
