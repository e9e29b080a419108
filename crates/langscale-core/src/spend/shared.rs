//! Budgets shared through Redis (placeholder until the scripts land).

use std::sync::Arc;

use super::ledger::{Ledger, Report};
use super::{Cost, Refusal, SpendConfig, Who};
use crate::limit::LimitError;

#[derive(Debug, Clone)]
pub struct SharedLedger {
    local: Arc<Ledger>,
}

impl SharedLedger {
    pub fn config(&self) -> Arc<SpendConfig> {
        self.local.config()
    }
    pub fn update(&self, config: SpendConfig) -> Result<(), LimitError> {
        self.local.update(config)
    }
    pub fn reserve(&self, who: &Who, cost: Cost, cheap: bool) -> Result<u64, Refusal> {
        self.local.reserve(who, cost, cheap)
    }
    pub fn settle(&self, id: u64, who: &Who, cost: Cost) {
        self.local.settle(id, who, cost);
    }
    pub fn release(&self, id: u64) {
        self.local.release(id);
    }
    pub fn local(&self) -> &Ledger {
        &self.local
    }
    pub fn report(&self) -> Report {
        self.local.report()
    }
}
