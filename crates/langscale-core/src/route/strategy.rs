//! How to order the deployments that could take a call: the first one that admits it gets it,
//! the rest are the fallbacks in that order. Every strategy breaks ties by (priority, index).

use std::sync::atomic::Ordering;

use super::deployment::RequestInfo;
use super::router::Router;
use super::RouteError;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum Strategy {
    /// Always the lowest priority number first: ordered fallbacks.
    #[default]
    Priority,
    /// Each request starts at the next deployment in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): shares follow the weights, evenly interleaved,
    /// deterministically.
    Weighted,
    /// The deployment with the fewest calls in flight.
    LeastInFlight,
    /// The lowest moving average of successful latencies; deployments never timed go first.
    LowestLatency,
    /// The lowest price for the request's estimated input and expected output tokens.
    LowestCost,
    /// `large` (in the order given) when the request's complexity is at least `threshold`,
    /// else `small`; the other group follows as fallback, then any deployment in neither.
    Complexity {
        small: Vec<usize>,
        large: Vec<usize>,
        threshold: f64,
    },
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastInFlight => "least_in_flight",
            Self::LowestLatency => "lowest_latency",
            Self::LowestCost => "lowest_cost",
            Self::Complexity { .. } => "complexity",
        }
    }

    pub(crate) fn validate(&self, deployments: usize) -> Result<(), RouteError> {
        if let Self::Complexity {
            small,
            large,
            threshold,
        } = self
        {
            if !threshold.is_finite() {
                return Err(RouteError::Config(format!(
                    "complexity threshold must be a finite number, got {threshold}"
                )));
            }
            for (group, members) in [("small", small), ("large", large)] {
                if members.is_empty() {
                    return Err(RouteError::Config(format!(
                        "complexity routing needs at least one {group} deployment"
                    )));
                }
                if let Some(bad) = members.iter().find(|&&i| i >= deployments) {
                    return Err(RouteError::Config(format!(
                        "complexity {group} deployment index {bad} is out of range: there are {deployments} deployments"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Router {
    /// Put `candidates` (given in (priority, index) order) in this request's order of preference.
    pub(crate) fn order(&self, info: &RequestInfo, complexity: f64, candidates: &mut [usize]) {
        if candidates.len() < 2 {
            return;
        }
        match &self.config.strategy {
            Strategy::Priority => {}
            Strategy::RoundRobin => {
                let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) % candidates.len();
                candidates.sort_unstable();
                candidates.rotate_left(turn);
            }
            Strategy::Weighted => {
                let best = self.weighted_pick(candidates);
                if let Some(pos) = candidates.iter().position(|&d| d == best) {
                    candidates[..=pos].rotate_right(1);
                }
            }
            Strategy::LeastInFlight => {
                candidates.sort_by_key(|&d| self.state(d).map_or(0, |s| s.in_flight()));
            }
            Strategy::LowestLatency => {
                // Untimed first (EWMA NaN -> key -inf), then fastest.
                candidates.sort_by(|&a, &b| {
                    let key = |d| {
                        self.state(d)
                            .and_then(|s| s.ewma_secs())
                            .unwrap_or(f64::NEG_INFINITY)
                    };
                    key(a).total_cmp(&key(b))
                });
            }
            Strategy::LowestCost => self.cheapest_first(info, candidates),
            Strategy::Complexity {
                small,
                large,
                threshold,
            } => {
                let (first, second) = if complexity >= *threshold {
                    (large, small)
                } else {
                    (small, large)
                };
                let rank = |d: usize| {
                    first
                        .iter()
                        .position(|&x| x == d)
                        .or_else(|| second.iter().position(|&x| x == d).map(|p| p + first.len()))
                        .unwrap_or(usize::MAX)
                };
                candidates.sort_by_key(|&d| rank(d));
            }
        }
    }

    /// Order `candidates` by their price for this request's estimated input and expected
    /// output tokens, cheapest first; a stable sort (equal prices keep their order).
    pub(crate) fn cheapest_first(&self, info: &RequestInfo, candidates: &mut [usize]) {
        let output = info
            .expected_output_tokens
            .unwrap_or(self.config.default_output_tokens);
        let key = |d: usize| {
            self.deployments.get(d).map_or(f64::INFINITY, |dep| {
                dep.cost(info.estimated_input_tokens, output)
            })
        };
        candidates.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    }

    /// One step of smooth weighted round robin over `candidates`; returns the chosen one.
    fn weighted_pick(&self, candidates: &[usize]) -> usize {
        let mut current = self
            .weighted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = 0.0;
        let mut best: Option<(usize, f64)> = None;
        for &d in candidates {
            let weight = self.deployments.get(d).map_or(0.0, |dep| dep.weight);
            total += weight;
            if let Some(c) = current.get_mut(d) {
                *c += weight;
                let better = match best {
                    Some((_, b)) => *c > b,
                    None => true,
                };
                if better {
                    best = Some((d, *c));
                }
            }
        }
        match best {
            Some((d, _)) => {
                if let Some(c) = current.get_mut(d) {
                    *c -= total;
                }
                d
            }
            None => candidates.first().copied().unwrap_or(0),
        }
    }
}
