//! The limiter's wait queue: weighted fair queuing between flows (tenants) on tokens, and the
//! existing (priority, arrival) order inside each flow.
//!
//! Start-time fair queuing (equivalent to deficit round robin, without its quantum): each
//! flow's first waiter carries a virtual start tag, `max(virtual time, the flow's last finish)`;
//! the waiter with the smallest tag is the head, the only one that may take capacity. Admitting
//! it moves the virtual time to its tag and the flow's finish to `tag + cost / weight`, so a
//! flow that sent 20 requests waits behind a newcomer's first one instead of in front of it. With
//! one flow (no tenants named) the order is exactly the flow's own order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Which flow a waiter belongs to: a tenant, or nobody in particular.
pub type Flow = Option<Arc<str>>;

/// A waiter's order inside its flow: (rank, arrival sequence).
pub type WaitKey = (u64, u64);

/// Virtual time units per token at weight 1 (so fractional weights keep precision).
const SCALE: f64 = 1_000_000.0;

/// Flows kept after going idle (their finish tag still ahead of the virtual time) before the
/// queue sweeps the ones whose credit has run out.
const IDLE_FLOWS_KEPT: usize = 4_096;

/// Where a waiter sits: its flow and its key inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub flow: Flow,
    pub key: WaitKey,
}

#[derive(Debug)]
struct FlowState<W> {
    waiters: BTreeMap<WaitKey, (W, u64)>,
    /// Virtual finish tag of this flow's last admitted request.
    finish: u128,
    /// This flow's entry in `heads` while it has waiters.
    head: Option<(u128, u64)>,
}

/// Waiters of every flow, fair between flows.
#[derive(Debug)]
pub struct FairQueue<W> {
    flows: HashMap<Flow, FlowState<W>>,
    heads: BTreeMap<(u128, u64), Flow>,
    virtual_time: u128,
    next_seq: u64,
    weights: HashMap<Arc<str>, f64>,
}

impl<W> Default for FairQueue<W> {
    fn default() -> Self {
        Self {
            flows: HashMap::new(),
            heads: BTreeMap::new(),
            virtual_time: 0,
            next_seq: 0,
            weights: HashMap::new(),
        }
    }
}

impl<W> FairQueue<W> {
    /// A flow's weight (default 1): its share of capacity against the other flows waiting.
    /// The caller checks it is positive and finite.
    pub fn set_weight(&mut self, flow: Arc<str>, weight: f64) {
        self.weights.insert(flow, weight);
    }

    fn weight(&self, flow: &Flow) -> f64 {
        flow.as_ref()
            .and_then(|f| self.weights.get(f))
            .copied()
            .unwrap_or(1.0)
    }

    /// Queue a waiter of `flow` at `rank` (lower first inside the flow) costing `cost` tokens.
    pub fn push(&mut self, flow: Flow, rank: u64, cost: u64, waiter: W) -> Place {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = (rank, seq);
        let virtual_time = self.virtual_time;
        let state = self.flows.entry(flow.clone()).or_insert_with(|| FlowState {
            waiters: BTreeMap::new(),
            finish: 0,
            head: None,
        });
        state.waiters.insert(key, (waiter, cost));
        if state.head.is_none() {
            let entry = (virtual_time.max(state.finish), seq);
            state.head = Some(entry);
            self.heads.insert(entry, flow.clone());
        }
        Place { flow, key }
    }

    /// The waiter that may take capacity now.
    pub fn head(&self) -> Option<&W> {
        let (_, flow) = self.heads.first_key_value()?;
        let state = self.flows.get(flow)?;
        state.waiters.first_key_value().map(|(_, (w, _))| w)
    }

    pub fn is_head(&self, place: &Place) -> bool {
        match self.heads.first_key_value() {
            Some((_, flow)) if *flow == place.flow => self
                .flows
                .get(flow)
                .and_then(|s| s.waiters.first_key_value())
                .is_some_and(|(k, _)| *k == place.key),
            _ => false,
        }
    }

    /// Admit the head: the virtual time moves to its tag, its flow's finish past it.
    pub fn pop_head(&mut self) {
        let Some(((tag, _), flow)) = self.heads.pop_first() else {
            return;
        };
        let weight = self.weight(&flow);
        let Some(state) = self.flows.get_mut(&flow) else {
            return;
        };
        let cost = state.waiters.pop_first().map_or(0, |(_, (_, c))| c.max(1));
        let step = ((cost as f64) * SCALE / weight).ceil();
        let step = if step.is_finite() && step >= 1.0 {
            step as u128
        } else {
            1
        };
        state.finish = tag.saturating_add(step);
        self.virtual_time = self.virtual_time.max(tag);
        state.head = None;
        if state.waiters.is_empty() {
            if state.finish <= self.virtual_time {
                self.flows.remove(&flow);
            }
        } else {
            let entry = (state.finish.max(self.virtual_time), self.next_seq);
            self.next_seq += 1;
            state.head = Some(entry);
            self.heads.insert(entry, flow);
        }
        self.end_busy_period();
        if self.flows.len() > IDLE_FLOWS_KEPT {
            let now = self.virtual_time;
            self.flows
                .retain(|_, s| !s.waiters.is_empty() || s.finish > now);
        }
    }

    /// Take a waiter out without admitting it (it gave up). Whether it was there.
    pub fn remove(&mut self, place: &Place) -> bool {
        let Some(state) = self.flows.get_mut(&place.flow) else {
            return false;
        };
        if state.waiters.remove(&place.key).is_none() {
            return false;
        }
        if state.waiters.is_empty() {
            // The flow's place among the others goes with its last waiter.
            if let Some(entry) = state.head.take() {
                self.heads.remove(&entry);
            }
            if state.finish <= self.virtual_time {
                self.flows.remove(&place.flow);
            }
            self.end_busy_period();
        }
        true
    }

    /// Nobody waits: fairness only orders waiters, so every flow's history is dropped (a
    /// tenant served a moment ago is not held back once the queue has emptied).
    fn end_busy_period(&mut self) {
        if self.heads.is_empty() {
            self.flows.clear();
            self.virtual_time = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Flow {
        Some(Arc::from(name))
    }

    /// Admit every waiter in turn; the order of their labels.
    fn drain(q: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Some(w) = q.head().copied() {
            out.push(w);
            q.pop_head();
        }
        out
    }

    #[test]
    fn one_flow_keeps_rank_then_arrival_order() {
        let mut q = FairQueue::default();
        q.push(None, 5, 1, "b");
        q.push(None, 1, 1, "a");
        q.push(None, 5, 1, "c");
        assert_eq!(drain(&mut q), ["a", "b", "c"]);
    }

    #[test]
    fn a_light_flow_is_not_stuck_behind_a_heavy_backlog() {
        let mut q = FairQueue::default();
        for _ in 0..20 {
            q.push(tenant("heavy"), 0, 100, "h");
        }
        q.push(tenant("light"), 0, 100, "l");
        let order = drain(&mut q);
        let at = order.iter().position(|w| *w == "l").unwrap();
        assert!(at <= 1, "light admitted {at}th: {order:?}");
    }

    #[test]
    fn flows_alternate_by_tokens_and_weights_share_capacity() {
        let mut q = FairQueue::default();
        q.set_weight(Arc::from("gold"), 3.0);
        for _ in 0..40 {
            q.push(tenant("gold"), 0, 10, "g");
            q.push(tenant("free"), 0, 10, "f");
        }
        let first: Vec<_> = drain(&mut q).into_iter().take(40).collect();
        let gold = first.iter().filter(|w| **w == "g").count();
        assert!((29..=31).contains(&gold), "gold got {gold} of the first 40");
    }

    #[test]
    fn costly_requests_count_by_tokens() {
        let mut q = FairQueue::default();
        for _ in 0..10 {
            q.push(tenant("big"), 0, 1_000, "B");
        }
        for _ in 0..10 {
            q.push(tenant("small"), 0, 100, "s");
        }
        let order = drain(&mut q);
        let first_eleven = &order[..11];
        let small = first_eleven.iter().filter(|w| **w == "s").count();
        assert_eq!(
            small, 10,
            "ten small requests cost what one big one does: {order:?}"
        );
    }

    #[test]
    fn removing_waiters_keeps_the_queue_consistent() {
        let mut q = FairQueue::default();
        let a = q.push(tenant("x"), 0, 1, "a");
        let b = q.push(tenant("y"), 0, 1, "b");
        let c = q.push(tenant("x"), 0, 1, "c");
        assert!(q.is_head(&a));
        assert!(q.remove(&a));
        assert!(!q.remove(&a), "a second removal finds nothing");
        assert!(q.is_head(&c) || q.is_head(&b));
        assert!(q.remove(&b));
        assert!(q.is_head(&c));
        assert!(q.remove(&c));
        assert!(q.head().is_none());
        assert!(q.heads.is_empty());
    }

    #[test]
    fn idle_flows_are_forgotten() {
        let mut q = FairQueue::default();
        // One long busy period (a backlog that never empties) with many passing tenants.
        for _ in 0..3 {
            q.push(tenant("backlog"), 0, 1, "b");
        }
        for i in 0..10_000u64 {
            let name = format!("t{i}");
            q.push(tenant(&name), 0, 1, "w");
            q.push(tenant("backlog"), 0, 1, "b");
            q.pop_head();
            q.pop_head();
        }
        assert!(q.flows.len() <= IDLE_FLOWS_KEPT + 2, "{}", q.flows.len());
        drain(&mut q);
        assert!(q.flows.is_empty(), "an empty queue keeps no history");
    }
}
