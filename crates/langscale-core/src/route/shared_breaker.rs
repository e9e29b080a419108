//! Breaker state per deployment shared between processes: a background task publishes the
//! breakers this process opened (a key per deployment, holding the wall-clock time it stays
//! open, expiring then) and, every poll, holds off the deployments others opened. Routing
//! itself never waits on Redis: it reads the router's own state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Router;
use crate::store::Store;

/// How often breaker state is exchanged.
pub const BREAKER_POLL: Duration = Duration::from_millis(200);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    held_off: AtomicU64,
}

/// Shares one router's breakers while it lives; dropping it stops the exchange.
#[derive(Debug)]
pub struct SharedBreakers {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl SharedBreakers {
    /// `group` names the set of deployments (processes naming the same group share);
    /// `names` are the deployments in the router's order.
    pub fn start(store: Store, router: Weak<Router>, group: &str, names: &[String]) -> Self {
        let tag = format!("breaker:{group}");
        let keys: Vec<String> = names.iter().map(|n| store.key(&tag, n)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (task_stop, task_counters) = (Arc::clone(&stop), Arc::clone(&counters));
        crate::store::runtime().spawn(async move {
            // Until (unix ms) this process last published for each deployment.
            let mut published = vec![0u64; keys.len()];
            while !task_stop.load(Ordering::Relaxed) {
                let Some(router) = router.upgrade() else {
                    return;
                };
                exchange(&store, &router, &keys, &mut published, &task_counters).await;
                drop(router);
                tokio::time::sleep(BREAKER_POLL).await;
            }
        });
        Self { stop, counters }
    }

    /// (breakers published, hold-offs applied from other processes).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.published.load(Ordering::Relaxed),
            self.counters.held_off.load(Ordering::Relaxed),
        )
    }
}

impl Drop for SharedBreakers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn exchange(
    store: &Store,
    router: &Router,
    keys: &[String],
    published: &mut [u64],
    counters: &Counters,
) {
    if keys.is_empty() || !store.is_up() {
        return;
    }
    let now = unix_ms();
    let mut pipe = redis::pipe();
    let mut any = false;
    for (i, open_for) in router.open_breakers() {
        let until = now.saturating_add(u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX));
        let (Some(key), Some(last)) = (keys.get(i), published.get_mut(i)) else {
            continue;
        };
        if until > *last + 50 {
            *last = until;
            let px = (until - now).max(1);
            pipe.cmd("SET")
                .arg(key)
                .arg(until)
                .arg("PX")
                .arg(px)
                .ignore();
            counters.published.fetch_add(1, Ordering::Relaxed);
            any = true;
        }
    }
    if any && store.pipeline::<()>(pipe).await.is_err() {
        return;
    }
    let mut mget = redis::cmd("MGET");
    mget.arg(keys);
    let Ok(values) = store.query::<Vec<Option<u64>>>(mget).await else {
        return;
    };
    for (i, until) in values.into_iter().enumerate() {
        let Some(until) = until else { continue };
        let own = published.get(i).is_some_and(|p| *p >= until);
        if until > now && !own {
            router.hold_off(i, Duration::from_millis(until - now));
            counters.held_off.fetch_add(1, Ordering::Relaxed);
        }
    }
}
