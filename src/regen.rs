//! Regeneration locks for `get_or_create`: striped byte-range locks on the
//! file (`REGEN + hash % regen_stripes`), separate from the write locks, plus
//! an in-process layer that makes them per key inside one process.
//!
//! Across processes a regeneration stripe is held by at most one process.
//! Inside the process that holds it, each *key* is held by at most one
//! thread: two keys that share a stripe do not block each other (a creator
//! for "a" may call `get_or_create("b")`), a thread that asks again for a
//! key it already holds gets [`Error::Reentrant`] instead of a deadlock, and
//! other threads asking for the same key wait or, with `try`, give up at
//! once. The file lock is taken when the first key of the stripe is taken
//! in this process and released with the last one.
//!
//! A process holding a stripe's file lock also publishes a *hint* in the
//! header (format.md §2.1, `regen_hints`): the stripe and a lease deadline.
//! A `try` (the stale path of `get_or_create`) that finds a live hint for
//! its stripe answers "busy" without the failing lock system call. The hint
//! only ever saves that call: the lock decides who regenerates, a stale or
//! overwritten hint just sends callers to the lock, and the lease bounds how
//! long a hint left by a killed process is believed.

use crate::clock::now_ns;
use crate::error::{Error, Result};
use crate::fork::generation;
use crate::layout::locks::REGEN;
use crate::layout::regen_hint;
use crate::locks::{self, Mode};
use crate::process::{RegenStripe, RegenTable};
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How long to wait for a regeneration lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Do not wait at all.
    Never,
    /// Wait until this instant (`None`: forever).
    Until(Option<Instant>),
}

/// The outcome of [`acquire`].
pub(crate) enum Acquired {
    /// The lock is ours; `waited` says whether someone else held it first.
    Held(RegenLock, bool),
    /// Someone else holds it (`Wait::Never`) or the deadline passed.
    Busy,
}

/// One held regeneration lock. Released on drop, also during a panic. It
/// is `Send`, so it can be handed to a background thread.
pub(crate) struct RegenLock {
    shared: Arc<Shared>,
    stripe: u32,
    key: Vec<u8>,
    generation: u64,
}

fn table_lock(t: &RegenTable) -> MutexGuard<'_, HashMap<u32, RegenStripe>> {
    t.stripes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on the table's condition variable until `deadline`; `false` when
/// the deadline has passed.
fn wait_changed<'t>(
    t: &'t RegenTable,
    g: MutexGuard<'t, HashMap<u32, RegenStripe>>,
    deadline: Option<Instant>,
) -> (MutexGuard<'t, HashMap<u32, RegenStripe>>, bool) {
    match deadline {
        None => (t.changed.wait(g).unwrap_or_else(|p| p.into_inner()), true),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return (g, false);
            }
            let (g, _) = t
                .changed
                .wait_timeout(g, d - now)
                .unwrap_or_else(|p| p.into_inner());
            (g, true)
        }
    }
}

/// The hint word `stripe` maps to (stripes share words).
fn hint_word(shared: &Shared, stripe: u32) -> &AtomicU64 {
    &shared.map.header().regen_hints[regen_hint::word_index(stripe)]
}

/// Whether another process published a live hint for `stripe`.
fn hinted_busy(shared: &Shared, stripe: u32) -> bool {
    let w = hint_word(shared, stripe).load(Ordering::Relaxed);
    regen_hint::names_live(w, stripe, now_ns())
}

/// Takes the regeneration lock of `key` (whose hash is `hash`).
pub(crate) fn acquire(shared: &Arc<Shared>, key: &[u8], hash: u64, wait: Wait) -> Result<Acquired> {
    let pr = shared.process()?;
    let table = &pr.regen;
    let stripe = (hash % shared.header.regen_stripes as u64) as u32; // as Cache::key_placement
    let me = std::thread::current().id();
    let deadline = match wait {
        Wait::Never => Some(Instant::now()),
        Wait::Until(d) => d,
    };
    let mut waited = false;
    let mut g = table_lock(table);
    loop {
        let st = g.entry(stripe).or_default();
        let busy = match st.keys.get(key) {
            Some(Some(owner)) if *owner == me => {
                return Err(Error::Reentrant {
                    key: String::from_utf8_lossy(key).into_owned(),
                })
            }
            Some(_) => true,
            None => !st.file_held && st.acquiring,
        };
        if busy {
            if matches!(wait, Wait::Never) {
                return Ok(Acquired::Busy);
            }
            waited = true;
            let (g2, in_time) = wait_changed(table, g, deadline);
            g = g2;
            if !in_time {
                return Ok(Acquired::Busy);
            }
            continue;
        }
        if !st.file_held {
            // Another process regenerates in this stripe: a `try` is busy
            // without the system call that would say so.
            if matches!(wait, Wait::Never) && hinted_busy(shared, stripe) {
                return Ok(Acquired::Busy);
            }
            st.acquiring = true;
            drop(g);
            let got = lock_file(shared, stripe, wait, deadline, &mut waited);
            g = table_lock(table);
            let st = g.entry(stripe).or_default();
            st.acquiring = false;
            table.changed.notify_all();
            match got {
                Ok(true) => {
                    st.file_held = true;
                    if shared.map.writable() {
                        let hint = regen_hint::encode(stripe, now_ns());
                        hint_word(shared, stripe).store(hint, Ordering::Relaxed);
                        st.hint = hint;
                    }
                }
                Ok(false) => return Ok(Acquired::Busy),
                Err(e) => return Err(e),
            }
        }
        let st = g.entry(stripe).or_default();
        st.keys.insert(key.to_vec(), Some(me));
        let lock = RegenLock {
            shared: shared.clone(),
            stripe,
            key: key.to_vec(),
            generation: pr.generation,
        };
        return Ok(Acquired::Held(lock, waited));
    }
}

/// Whether `key`'s regeneration lock is held, without taking it: by a
/// caller of this process (per key), or by another process (its stripe's
/// file lock, queried without being taken).
pub(crate) fn is_locked(shared: &Arc<Shared>, key: &[u8], hash: u64) -> Result<bool> {
    let pr = shared.process()?;
    let stripe = (hash % shared.header.regen_stripes as u64) as u32;
    {
        let g = table_lock(&pr.regen);
        if let Some(st) = g.get(&stripe) {
            if st.keys.contains_key(key) {
                return Ok(true);
            }
            if st.file_held {
                return Ok(false); // no other process can hold the stripe
            }
        }
    }
    locks::held_by_other(&pr.file, REGEN + stripe as u64)
        .map_err(|e| Error::io("querying a regeneration lock", &shared.path, e))
}

/// Takes the file half of regeneration stripe `stripe`, polling (with
/// back-off) until `deadline` when there is one.
fn lock_file(
    shared: &Shared,
    stripe: u32,
    wait: Wait,
    deadline: Option<Instant>,
    waited: &mut bool,
) -> Result<bool> {
    let pr = shared.process()?;
    let off = REGEN + stripe as u64;
    let io = |e| Error::io("taking a regeneration lock", &shared.path, e);
    if locks::lock(&pr.file, off, Mode::Exclusive, false).map_err(io)? {
        return Ok(true);
    }
    if matches!(wait, Wait::Never) {
        return Ok(false);
    }
    *waited = true;
    let Some(deadline) = deadline else {
        return locks::lock(&pr.file, off, Mode::Exclusive, true).map_err(io);
    };
    let mut pause = Duration::from_micros(50);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(2));
        if locks::lock(&pr.file, off, Mode::Exclusive, false).map_err(io)? {
            return Ok(true);
        }
    }
}

impl RegenLock {
    /// Sets the thread that owns the lock for re-entry checks: `None` while
    /// handing it to a background thread (nobody re-enters; other callers
    /// still see it held), then the background thread itself.
    fn set_owner(&self, owner: Option<ThreadId>) {
        let Ok(pr) = self.shared.process() else {
            return;
        };
        if pr.generation != self.generation {
            return;
        }
        let mut g = table_lock(&pr.regen);
        if let Some(o) = g
            .get_mut(&self.stripe)
            .and_then(|st| st.keys.get_mut(&self.key))
        {
            *o = owner;
        }
    }

    /// Called by the handing-over thread before the hand-over.
    pub(crate) fn release_owner(&self) {
        self.set_owner(None);
    }

    /// Called by the thread that takes the lock over.
    pub(crate) fn adopt(&self) {
        self.set_owner(Some(std::thread::current().id()));
    }
}

impl Drop for RegenLock {
    fn drop(&mut self) {
        // A fork child does not own its parent's regeneration locks.
        if self.generation != generation() {
            return;
        }
        let Ok(pr) = self.shared.process() else {
            return;
        };
        let mut g = table_lock(&pr.regen);
        if let Some(st) = g.get_mut(&self.stripe) {
            st.keys.remove(&self.key);
            if st.keys.is_empty() && !st.acquiring {
                if st.file_held {
                    if st.hint != 0 {
                        // Withdraw our hint, unless another holder of a
                        // stripe sharing the word has replaced it.
                        let _ = hint_word(&self.shared, self.stripe).compare_exchange(
                            st.hint,
                            0,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    let _ = locks::unlock(&pr.file, REGEN + self.stripe as u64);
                }
                g.remove(&self.stripe);
            }
        }
        pr.regen.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cache, Options};

    use crate::layout::regen_hint::{encode as hint_value, HINT_LEASE_NS, HINT_WORDS};
    use crate::testing::TestDir;

    fn cache(name: &str) -> (TestDir, Cache) {
        let d = TestDir::new(&format!("regen-{name}"));
        let c = Cache::open(d.path().join("c"), Options::new().capacity(8 << 20)).unwrap();
        (d, c)
    }

    fn try_take(c: &Cache, key: &[u8], hash: u64) -> Option<RegenLock> {
        match acquire(c.shared_arc(), key, hash, Wait::Never).unwrap() {
            Acquired::Held(lock, _) => Some(lock),
            Acquired::Busy => None,
        }
    }

    #[test]
    fn holder_publishes_and_withdraws_its_hint() {
        let (d, c) = cache("publish");
        let sh = c.shared_arc();
        let hash = 12_345u64;
        let stripe = (hash % sh.header.regen_stripes as u64) as u32;
        assert_eq!(hint_word(sh, stripe).load(Ordering::Relaxed), 0);
        let lock = try_take(&c, b"k", hash).expect("the lock is free");
        let w = hint_word(sh, stripe).load(Ordering::Relaxed);
        assert_eq!(
            regen_hint::stripe_plus_one(w),
            stripe as u64 + 1,
            "hint names the stripe"
        );
        // The holder's own process is not fooled by its own hint: another
        // key of the same stripe is still available to it.
        let other = try_take(&c, b"other", hash).expect("same stripe, other key");
        drop(other);
        assert_eq!(
            hint_word(sh, stripe).load(Ordering::Relaxed),
            w,
            "still held"
        );
        drop(lock);
        assert_eq!(
            hint_word(sh, stripe).load(Ordering::Relaxed),
            0,
            "withdrawn"
        );
        drop((c, d));
    }

    #[test]
    fn a_live_hint_of_another_process_makes_a_try_busy_and_a_stale_one_does_not() {
        let (d, c) = cache("believe");
        let sh = c.shared_arc();
        let hash = 777u64;
        let stripe = (hash % sh.header.regen_stripes as u64) as u32;
        let word = hint_word(sh, stripe);
        // What another process holding the stripe would have published. The
        // file lock itself is free, so only the hint can say "busy".
        word.store(hint_value(stripe, now_ns()), Ordering::Relaxed);
        assert!(
            try_take(&c, b"k", hash).is_none(),
            "a live hint is believed"
        );
        // A blocking acquire does not look at hints: it takes the free lock.
        match acquire(sh, b"k", hash, Wait::Until(None)).unwrap() {
            Acquired::Held(lock, _) => drop(lock),
            Acquired::Busy => panic!("a blocking acquire trusted a hint"),
        }
        // A hint past its lease (a killed holder), or one naming another
        // stripe that shares the word, is not believed.
        let expired = hint_value(stripe, now_ns() - 2 * HINT_LEASE_NS);
        word.store(expired, Ordering::Relaxed);
        drop(try_take(&c, b"k", hash).expect("an expired hint is ignored"));
        let other = stripe + HINT_WORDS as u32;
        word.store(hint_value(other, now_ns()), Ordering::Relaxed);
        drop(try_take(&c, b"k", hash).expect("another stripe's hint is ignored"));
        drop((c, d));
    }
}
