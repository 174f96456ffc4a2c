//! The reader table's protocols (format.md §5.6): a thread's slot
//! ([`ThreadSlot`]: its pins, one word per stripe, and its counters), the
//! pins of guards ([`Pin`]) and of detached guards ([`DetachedPin`]), and
//! the writers' question whether a live reader pins space ([`find_pin`],
//! behind [`PinScan`]). The slot's layout is
//! [`layout::reader`](crate::layout::reader)'s; claiming and releasing a
//! slot is [`Process`]'s.
//!
//! A slot is owned through a byte-range lock at `LIVE + index`: a thread
//! claims a slot by taking that lock without waiting, so a slot whose owner
//! died (the kernel dropped its lock) can be claimed again, and a writer that
//! finds a pin in a slot whose lock nobody holds knows the pin is dead
//! (LMDB's reader-table liveness check, with locks instead of pids).
//!
//! Pinning follows the hazard-pointer pattern. A reader stores the position
//! it is about to read into its pin word, then re-reads the stripe's tail; a
//! writer advances the tail, then scans the pins before it reuses a segment.
//! Either the reader sees the new tail (and backs off) or the writer sees
//! the pin (and waits): because both sides are sequentially consistent, or,
//! for a reader whose process is registered for `membarrier` (its slot says
//! [`PINS_PLAIN`]), because the writer makes every such reader execute a
//! full barrier between its tail store and its scan ([`barrier`]), so the
//! reader's pin store needs no fence of its own (format.md §5.5).
//!
//! Read-only handles cannot write the table; they pin a segment with a
//! shared byte-range lock at `RO_PIN + stripe * segments + segment`, which
//! costs two system calls per guard.

use crate::barrier;
use crate::error::{Error, Result};
use crate::fork::generation;
use crate::layout::locks::{LIVE, RO_PIN};
use crate::layout::reader::{Counter, ReaderCounters, PINS_FENCED, PINS_PLAIN};
use crate::locks::{self, Mode};
use crate::process::{Process, ProcessPinState, ProcessPins};
use crate::shared::Shared;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, Weak};

/// A reader slot held by the current thread.
pub(crate) struct ThreadSlot {
    shared_id: u64,
    generation: u64,
    /// Index in the reader table.
    pub index: u32,
    /// Pins are published with plain stores ([`PINS_PLAIN`]: this process
    /// is registered for the evictors' barrier).
    plain: bool,
    /// Per stripe: the thread's pins and its pin word (one bounds check).
    stripes: Box<[StripePins]>,
    /// The slot's counter line in the mapping: located once, at the claim,
    /// rather than on every read (the mapping stays at its address for as
    /// long as the file is open, also across `fork`, see
    /// `map::remap_in_child`). Dereferenced only through
    /// [`counters`](ThreadSlot::counters), with the file at hand.
    counters: *const ReaderCounters,
    owner: Weak<Shared>,
}

/// A thread's pins on one stripe of a file.
struct StripePins {
    /// How many live pins ([`Pin`]s, and pins being taken) of the thread.
    count: Cell<u32>,
    /// What the pin word holds (lowest pinned position + 1), 0 for none.
    pinned: Cell<u64>,
    /// The slot's pin word for this stripe in the mapping, located at the
    /// claim like [`ThreadSlot::counters`]; dereferenced only through
    /// [`ThreadSlot::pin_word`].
    word: *const AtomicU64,
}

/// The error for a read from a thread whose thread-locals are being destroyed.
fn tls_gone(shared: &Shared) -> Error {
    let e = std::io::Error::other("the thread is exiting: its reader slots are gone");
    Error::io("reading", &shared.path, e)
}

/// The current thread's slots, one per file it read (and per fork
/// generation). A slot is freed when it leaves this list (its file is gone,
/// or it is a fork parent's) or with the thread's locals, unless a
/// [`Pin`] still counts on it: then it is leaked, for [`Pin::Slot`] holds a
/// plain reference to it (see [`ThreadSlots::remove`]).
struct ThreadSlots(Vec<Rc<ThreadSlot>>);

impl ThreadSlots {
    /// Takes the slots `keep` rejects out of the list, freeing those that
    /// no pin counts on and leaking the others. Forgets [`LAST`] first.
    fn remove(&mut self, keep: impl Fn(&ThreadSlot) -> bool) {
        LAST.set(NO_SLOT);
        let mut i = 0;
        while i < self.0.len() {
            if keep(&self.0[i]) {
                i += 1;
                continue;
            }
            let t = self.0.swap_remove(i);
            if t.stripes.iter().any(|p| p.count.get() != 0) {
                // A live `Pin` (say, a guard kept by another thread-local
                // whose destructor runs later, or inherited across `fork`)
                // refers to it: it must stay allocated. Its reader slot stays
                // claimed until the process exits (a rare, bounded leak).
                std::mem::forget(t);
            }
        }
    }
}

impl Drop for ThreadSlots {
    fn drop(&mut self) {
        self.remove(|_| false);
    }
}

/// The last slot [`ThreadSlot::get`] found: `(file id, fork generation,
/// slot)`. File ids start at 1, so [`NO_SLOT`] matches none.
type Last = (u64, u64, *const ThreadSlot);

/// [`LAST`] when it names no slot.
const NO_SLOT: Last = (0, 0, std::ptr::null());

thread_local! {
    static SLOTS: RefCell<ThreadSlots> = const { RefCell::new(ThreadSlots(Vec::new())) };
    /// Without a destructor, so it is readable at any time, including
    /// while the thread's locals are destroyed; [`ThreadSlots::remove`]
    /// (run by `SLOTS`'s destructor too) resets it before it frees a slot.
    static LAST: Cell<Last> = const { Cell::new(NO_SLOT) };
}

impl ThreadSlot {
    /// The current thread's slot for `shared`, claiming one on first use.
    ///
    /// The reference is valid until this thread next claims a slot or
    /// destroys its locals, or, while a [`Pin`] made with it counts on it,
    /// for as long as that pin lives ([`ThreadSlots::remove`] leaks a slot
    /// something counts on). Callers use it at once or through a pin.
    #[inline]
    pub(crate) fn get(shared: &Arc<Shared>) -> Result<&ThreadSlot> {
        let (id, gen, slot) = LAST.get();
        if id == shared.id && gen == generation() {
            // SAFETY: `LAST` names a slot of `SLOTS` (set by `find`, reset
            // by `ThreadSlots::remove` before any slot leaves the list), so
            // it is allocated; `ThreadSlot` is not `Sync`, so only this
            // thread reaches it, and the reference's use follows the
            // contract above.
            return Ok(unsafe { &*slot });
        }
        Self::find(shared)
    }

    /// [`get`](ThreadSlot::get) when [`LAST`] names another slot: searches
    /// the thread's slots, claiming one if it has none for `shared`, and
    /// remembers it in [`LAST`].
    #[cold]
    fn find(shared: &Arc<Shared>) -> Result<&ThreadSlot> {
        let gen = generation();
        let found = SLOTS
            .try_with(|v| {
                v.borrow()
                    .0
                    .iter()
                    .find(|t| t.shared_id == shared.id && t.generation == gen)
                    .map(Rc::as_ptr)
            })
            .map_err(|_| tls_gone(shared))?;
        let slot = match found {
            Some(t) => t,
            None => Self::claim(shared)?,
        };
        LAST.set((shared.id, gen, slot));
        // SAFETY: `slot` is in `SLOTS` (found or just pushed); see `get`.
        Ok(unsafe { &*slot })
    }

    /// The index of the current thread's slot for `shared`, if it has one.
    pub(crate) fn current_index(shared: &Shared) -> Option<u32> {
        let gen = generation();
        SLOTS
            .try_with(|v| {
                v.borrow()
                    .0
                    .iter()
                    .find(|t| t.shared_id == shared.id && t.generation == gen)
                    .map(|t| t.index)
            })
            .ok()
            .flatten()
    }

    /// Claims a slot of the table for this thread, adding it to `SLOTS`.
    #[cold]
    fn claim(shared: &Arc<Shared>) -> Result<*const ThreadSlot> {
        let pr = shared.process()?;
        let geo = &shared.geo;
        let i = pr.claim_slot(&shared.map, &shared.path)?;
        // Marked before the first pin; the fence orders the mark before
        // every later tail load, for an evictor that cannot issue the
        // barrier and goes by the mark instead (format.md §5.5).
        let plain = barrier::register();
        let mark = if plain { PINS_PLAIN } else { PINS_FENCED };
        shared
            .map
            .counters(i)
            .pin_fence
            .store(mark, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        {
            let slot = Rc::new(ThreadSlot {
                shared_id: shared.id,
                generation: pr.generation,
                index: i,
                plain,
                // One entry per ring id (format.md §2.3): main rings
                // `0..stripes`, probation rings `stripes..2*stripes`.
                stripes: (0..2 * geo.stripes)
                    .map(|r| StripePins {
                        count: Cell::new(0),
                        pinned: Cell::new(0),
                        word: shared.map.pin(i, r),
                    })
                    .collect(),
                counters: shared.map.counters(i),
                owner: Arc::downgrade(shared),
            });
            let ptr = Rc::as_ptr(&slot);
            SLOTS
                .try_with(|v| {
                    let mut v = v.borrow_mut();
                    v.remove(|t| t.owner.strong_count() > 0 && t.generation == pr.generation);
                    v.0.push(slot);
                })
                .map_err(|_| tls_gone(shared))?;
            Ok(ptr)
        }
    }

    /// The pin word of `p` (one of this slot's stripes) in `shared`, the
    /// slot's file.
    #[inline]
    fn pin_word<'s>(&self, shared: &'s Shared, p: &StripePins) -> &'s AtomicU64 {
        debug_assert_eq!(shared.id, self.shared_id, "another file's slot");
        // SAFETY: `p.word` is `shared.map.pin(self.index, s)` for its
        // stripe `s`, a word in the mapping of `shared`, which the caller
        // holds alive for 's and which never moves while it lives.
        unsafe { &*p.word }
    }

    /// This slot's counter line in `shared`, the slot's file.
    #[inline]
    fn counters<'s>(&self, shared: &'s Shared) -> &'s ReaderCounters {
        debug_assert_eq!(shared.id, self.shared_id, "another file's slot");
        // SAFETY: `counters` is `shared.map.counters(self.index)`, in the
        // mapping of `shared`, alive and unmoved for 's (as in `pin_word`).
        unsafe { &*self.counters }
    }

    /// Adds one to counter `field`. Only this thread writes the slot's
    /// counters, so a plain load and store do.
    #[inline]
    pub(crate) fn count(&self, shared: &Shared, field: Counter) {
        let c = self.counters(shared).get(field);
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Publishes a pin on `pos` in stripe `s`. The pin word holds the lowest
    /// pinned position + 1 and protects everything from there on.
    /// Returns the word's previous value, for [`ThreadSlot::back_off`].
    /// A plain store where evictors issue the barrier ([`PINS_PLAIN`]), a
    /// sequentially consistent swap otherwise.
    #[inline]
    fn pin(&self, shared: &Shared, s: u32, pos: u64) -> u64 {
        let p = &self.stripes[s as usize];
        let (c, cur) = (&p.count, &p.pinned);
        let prev = cur.get();
        let want = pos + 1;
        if c.get() == 0 || want < prev {
            if self.plain {
                self.pin_word(shared, p).store(want, Ordering::Relaxed);
                barrier::light();
            } else {
                self.pin_word(shared, p).swap(want, Ordering::SeqCst);
            }
            cur.set(want);
        }
        c.set(c.get() + 1);
        prev
    }

    /// The re-check after [`pin`](ThreadSlot::pin): the stripe's tail,
    /// loaded sequentially consistent after a fenced pin, with Acquire
    /// after a plain one (orders the record's loads after it; the
    /// evictor's barrier does the rest).
    #[inline]
    fn tail_after_pin(&self, tail: &AtomicU64) -> u64 {
        if self.plain {
            tail.load(Ordering::Acquire)
        } else {
            tail.load(Ordering::SeqCst)
        }
    }

    /// Undoes a [`pin`](ThreadSlot::pin) whose position turned out dead,
    /// restoring the word to what the other guards on the stripe need.
    #[cold]
    fn back_off(&self, shared: &Shared, s: u32, prev: u64) {
        let p = &self.stripes[s as usize];
        if p.count.get() > 1 && p.pinned.get() != prev {
            p.count.set(p.count.get() - 1);
            self.pin_word(shared, p).store(prev, Ordering::Release);
            p.pinned.set(prev);
        } else {
            self.unpin(shared, s);
        }
    }

    #[inline]
    fn unpin(&self, shared: &Shared, s: u32) {
        let p = &self.stripes[s as usize];
        p.count.set(p.count.get() - 1);
        if p.count.get() == 0 && self.generation == generation() {
            self.pin_word(shared, p).store(0, Ordering::Release);
            p.pinned.set(0);
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        // In a fork child the slot is the parent's: leave it alone.
        if self.generation != generation() {
            return;
        }
        let Some(shared) = self.owner.upgrade() else {
            return;
        };
        let Ok(pr) = shared.process() else { return };
        pr.release_slot(&shared.map, self.index);
    }
}

impl ProcessPins {
    fn state(&self) -> MutexGuard<'_, ProcessPinState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `pos` of stripe `s` in the process slot, then re-checks the
    /// tail exactly as a thread's pin does (format.md §5.5): `true` when
    /// the pin protects `pos`, `false` (pin undone) when the tail already
    /// passed it — a writer may then be scanning the pins, and only a pin
    /// published before its tail store is sure to be seen.
    fn pin(&self, shared: &Shared, pr: &Process, s: u32, pos: u64) -> Result<bool> {
        let mut st = self.state();
        let slot = match st.slot {
            Some(i) => i,
            None => {
                let i = pr.claim_slot(&shared.map, &shared.path)?;
                st.slot = Some(i);
                i
            }
        };
        let word = shared.map.pin(slot, s);
        let positions = st.pinned.entry(s).or_default();
        *positions.entry(pos).or_insert(0) += 1;
        let lowest = *positions.keys().next().expect("just inserted");
        word.swap(lowest + 1, Ordering::SeqCst);
        if shared.map.ring_tail(s).load(Ordering::SeqCst) > pos {
            Self::remove(&mut st, shared, slot, s, pos);
            return Ok(false);
        }
        Ok(true)
    }

    /// Drops one pin of `pos` in stripe `s`.
    fn unpin(&self, shared: &Shared, s: u32, pos: u64) {
        let mut st = self.state();
        if let Some(slot) = st.slot {
            Self::remove(&mut st, shared, slot, s, pos);
        }
    }

    fn remove(st: &mut ProcessPinState, shared: &Shared, slot: u32, s: u32, pos: u64) {
        let Some(positions) = st.pinned.get_mut(&s) else {
            return;
        };
        if let Some(n) = positions.get_mut(&pos) {
            *n -= 1;
            if *n == 0 {
                positions.remove(&pos);
            }
        }
        let word = positions.keys().next().map_or(0, |p| p + 1);
        shared.map.pin(slot, s).store(word, Ordering::Release);
    }
}

/// A pin that belongs to the process rather than to a thread: what keeps
/// the bytes of an [`OwnedGuard`](crate::OwnedGuard) from being reused.
/// Released on drop, on any thread; does nothing in a fork child (the pin
/// is the parent's).
pub(crate) struct DetachedPin {
    shared: Arc<Shared>,
    generation: u64,
    kind: DetachedKind,
}

enum DetachedKind {
    /// Position `pos` of stripe `stripe`, in the process slot.
    Slot { stripe: u32, pos: u64 },
    /// One more reference to a read-only pin lock.
    Lock { off: u64 },
}

impl Drop for DetachedPin {
    fn drop(&mut self) {
        if self.generation != generation() {
            return;
        }
        let Ok(pr) = self.shared.process() else {
            return;
        };
        match self.kind {
            DetachedKind::Slot { stripe, pos } => pr.detached.unpin(&self.shared, stripe, pos),
            DetachedKind::Lock { off } => release_ro_pin(pr, off),
        }
    }
}

/// Drops one reference to the read-only pin lock at `off`, unlocking it
/// with the last one.
fn release_ro_pin(pr: &Process, off: u64) {
    if pr.generation != generation() {
        return;
    }
    let mut pins = pr.ro_pins.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = pins.get_mut(&off) {
        *n -= 1;
        if *n == 0 {
            pins.remove(&off);
            let _ = locks::unlock(&pr.file, off);
        }
    }
}

/// What keeps a record's bytes from being reused while a guard lives.
pub(crate) enum Pin<'c> {
    /// A pin word in the thread's reader slot.
    Slot {
        /// The slot: a plain reference, valid while this pin lives because
        /// the pin counts on it ([`ThreadSlots::remove`] never frees a slot
        /// that a pin counts on), and reached only from this thread
        /// (`ThreadSlot` is not `Sync`, so neither `Pin` nor a guard holding
        /// it is `Send`).
        slot: &'c ThreadSlot,
        /// The file.
        shared: &'c Arc<Shared>,
        /// The stripe pinned.
        stripe: u32,
        /// The position pinned.
        pos: u64,
    },
    /// A shared byte-range lock (read-only handles).
    Lock {
        /// The file.
        shared: &'c Arc<Shared>,
        /// The process state the lock was taken through.
        process: &'c Process,
        /// The lock offset.
        off: u64,
    },
}

impl<'c> Pin<'c> {
    /// Pins `pos` of ring id `s` (a stripe's main ring is its number, its
    /// probation ring `stripes` + it: format.md §2.3) and checks it is
    /// still live. `None` when the position fell below the ring's tail
    /// meanwhile (the caller treats that like a slot that changed under it).
    #[inline]
    pub(crate) fn acquire(shared: &'c Arc<Shared>, s: u32, pos: u64) -> Result<Option<Pin<'c>>> {
        let tail = shared.map.ring_tail(s);
        if shared.read_only.is_none() {
            let slot = ThreadSlot::get(shared)?;
            let prev = slot.pin(shared, s, pos);
            if slot.tail_after_pin(tail) > pos {
                slot.back_off(shared, s, prev);
                return Ok(None);
            }
            return Ok(Some(Pin::Slot {
                slot,
                shared,
                stripe: s,
                pos,
            }));
        }
        let pr = shared.process()?;
        let geo = &shared.geo;
        let ring = geo.ring(crate::layout::Ring::from_bit(s >= geo.stripes));
        let off = RO_PIN
            + s as u64 * geo.segments as u64
            + (pos / ring.segment_size) % ring.segments as u64;
        {
            let mut pins = pr.ro_pins.lock().unwrap_or_else(|p| p.into_inner());
            let n = pins.entry(off).or_insert(0);
            if *n == 0 {
                locks::lock(&pr.file, off, Mode::Shared, true)
                    .map_err(|e| Error::io("taking a read-only pin", &shared.path, e))?;
            }
            *n += 1;
        }
        // A read-only mapping may only be loaded with Relaxed ordering; the
        // fence (and the lock system call before it) orders the load.
        fence(Ordering::SeqCst);
        let pin = Pin::Lock {
            shared,
            process: pr,
            off,
        };
        let live = tail.load(Ordering::Relaxed) <= pos;
        fence(Ordering::Acquire);
        Ok(live.then_some(pin))
    }

    /// A pin of the same bytes that belongs to the process, for a guard
    /// that leaves this thread; `None` when the position can no longer be
    /// pinned safely (the tail passed it: this pin still protects the
    /// bytes, a new one might not), and the caller copies the bytes.
    pub(crate) fn detach(&self) -> Result<Option<DetachedPin>> {
        match self {
            Pin::Slot {
                shared,
                stripe,
                pos,
                ..
            } => {
                let pr = shared.process()?;
                if !pr.detached.pin(shared, pr, *stripe, *pos)? {
                    return Ok(None);
                }
                Ok(Some(DetachedPin {
                    shared: Arc::clone(shared),
                    generation: pr.generation,
                    kind: DetachedKind::Slot {
                        stripe: *stripe,
                        pos: *pos,
                    },
                }))
            }
            Pin::Lock {
                shared,
                process: pr,
                off,
            } => {
                // We hold a reference to the lock: one more keeps it taken.
                let mut pins = pr.ro_pins.lock().unwrap_or_else(|p| p.into_inner());
                *pins.entry(*off).or_insert(0) += 1;
                Ok(Some(DetachedPin {
                    shared: Arc::clone(shared),
                    generation: pr.generation,
                    kind: DetachedKind::Lock { off: *off },
                }))
            }
        }
    }

    /// Counts an event in this reader's counters.
    #[inline]
    pub(crate) fn count(&self, field: Counter) {
        match self {
            Pin::Slot { slot, shared, .. } => slot.count(shared, field),
            Pin::Lock { shared, .. } => count_local(shared, field),
        }
    }
}

/// Counts an event in the calling thread's reader slot (claiming one if it
/// has none yet; an event that cannot be counted is not), or in the
/// process's counters for a read-only handle.
pub(crate) fn count(shared: &Arc<Shared>, field: Counter) {
    if shared.read_only.is_some() {
        count_local(shared, field);
    } else if let Ok(slot) = ThreadSlot::get(shared) {
        slot.count(shared, field);
    }
}

/// Counts an event for a reader without a slot (read-only handles).
pub(crate) fn count_local(shared: &Shared, field: Counter) {
    let l = &shared.local;
    let c = match field {
        Counter::Hits => &l.hits,
        Counter::Misses => &l.misses,
        Counter::Expired => &l.expired,
        Counter::Corrupt => &l.corrupt,
        Counter::Mismatched => &l.mismatched,
        // Regeneration counters: read-only handles do not regenerate.
        Counter::Creates | Counter::StaleServed | Counter::Waits | Counter::LockTimeouts => return,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

impl Drop for Pin<'_> {
    #[inline]
    fn drop(&mut self) {
        match self {
            Pin::Slot {
                slot,
                shared,
                stripe,
                ..
            } => slot.unpin(shared, *stripe),
            Pin::Lock {
                process: pr, off, ..
            } => release_ro_pin(pr, *off),
        }
    }
}

/// A live reader found pinning space a writer wants to reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Reader slot `i` (of this or another live process).
    Slot(u32),
    /// The calling thread itself: waiting would never end.
    SelfThread(u32),
    /// A read-only process.
    ReadOnly,
}

/// How many reader slots a writer scans for pins: every slot of the table,
/// claimed or not. (`reader_hwm` would be shorter, but a damaged
/// high-water mark could then hide a live pin.)
fn slots_to_scan(shared: &Shared) -> u32 {
    shared.geo.reader_slots
}

/// Whether reader slot `i`, whose pin word is non-zero, belongs to a live
/// thread: the caller itself, another thread of this process, or a thread
/// of a live process (its liveness lock is held).
pub(crate) fn pin_holder(
    shared: &Shared,
    pr: &Process,
    me: Option<u32>,
    i: u32,
) -> Result<Option<Holder>> {
    if me == Some(i) {
        return Ok(Some(Holder::SelfThread(i)));
    }
    if pr.owned_slots[i as usize].load(Ordering::Acquire) {
        return Ok(Some(Holder::Slot(i)));
    }
    let alive = locks::held_by_other(&pr.file, LIVE + i as u64)
        .map_err(|e| Error::io("checking a reader's liveness", &shared.path, e))?;
    // A dead owner's pin protects nobody. (The word is reset by the next
    // thread that claims the slot; a new owner's pins are set after the
    // tail moved past the space being reused, so they back off by themselves.)
    Ok(alive.then_some(Holder::Slot(i)))
}

/// Finds a live reader that pins any position below `end` in ring id `s`
/// (format.md §2.3), or holds a read-only pin on its physical segment
/// `phys`. Pins of dead readers are ignored. The caller stored the tail
/// past `end` before.
///
/// First issues the barrier that makes plain pin stores visible
/// ([`barrier::heavy`]); if it cannot, a live slot marked [`PINS_PLAIN`]
/// counts as pinning whatever its pin word reads (other than the calling
/// thread's own, whose stores it sees in program order).
pub(crate) fn find_pin(
    shared: &Shared,
    pr: &Process,
    s: u32,
    end: u64,
    phys: u64,
) -> Result<Option<Holder>> {
    scan_pins(shared, pr, s, end, phys, barrier::heavy())
}

/// [`find_pin`]'s scan, `fenced` telling whether the barrier was issued.
fn scan_pins(
    shared: &Shared,
    pr: &Process,
    s: u32,
    end: u64,
    phys: u64,
    fenced: bool,
) -> Result<Option<Holder>> {
    let geo = &shared.geo;
    let me = ThreadSlot::current_index(shared);
    for i in 0..slots_to_scan(shared) {
        let w = shared.map.pin(i, s).load(Ordering::SeqCst);
        let pinned = w != 0 && w <= end;
        let blind = !fenced
            && me != Some(i)
            && shared.map.counters(i).pin_fence.load(Ordering::SeqCst) != PINS_FENCED;
        if !pinned && !blind {
            continue;
        }
        if let Some(h) = pin_holder(shared, pr, me, i)? {
            return Ok(Some(h));
        }
    }
    let ro = RO_PIN + s as u64 * geo.segments as u64 + phys;
    if locks::held_by_other(&pr.file, ro)
        .map_err(|e| Error::io("checking read-only pins", &shared.path, e))?
    {
        return Ok(Some(Holder::ReadOnly));
    }
    Ok(None)
}

/// Live pins on stripe `s`'s two rings (reader slots of live threads with
/// a non-zero pin word, plus read-only pins held on its segments), for
/// `verify`.
pub(crate) fn count_live_pins(shared: &Shared, pr: &Process, s: u32) -> Result<u64> {
    let geo = &shared.geo;
    let me = ThreadSlot::current_index(shared);
    // Makes plain pin stores visible where it can (a count, not a safety
    // decision: without the barrier a fresh plain pin may be missed).
    barrier::heavy();
    let mut n = 0;
    for ring in [crate::layout::Ring::Main, crate::layout::Ring::Probation] {
        let r = ring.id(s, geo.stripes);
        for i in 0..slots_to_scan(shared) {
            let w = shared.map.pin(i, r).load(Ordering::SeqCst);
            if w != 0 && pin_holder(shared, pr, me, i)?.is_some() {
                n += 1;
            }
        }
        for g in 0..geo.ring(ring).segments as u64 {
            let ro = RO_PIN + r as u64 * geo.segments as u64 + g;
            if locks::held_by_other(&pr.file, ro)
                .map_err(|e| Error::io("checking read-only pins", &shared.path, e))?
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Who pins space a writer wants to reuse: what the log asks before it
/// enters a segment (format.md §5.4 step 2).
pub(crate) trait PinScan {
    /// A live reader that pins any position below `end` in ring id `s`, or
    /// holds a read-only pin on its physical segment `phys`.
    fn find_pin(&self, s: u32, end: u64, phys: u64) -> Result<Option<Holder>>;
}

/// The readers of a file as seen from one process: its reader table and
/// its read-only pin locks.
pub(crate) struct FileReaders<'a> {
    /// The file.
    pub shared: &'a Shared,
    /// This process's state for it.
    pub process: &'a Process,
}

impl PinScan for FileReaders<'_> {
    fn find_pin(&self, s: u32, end: u64, phys: u64) -> Result<Option<Holder>> {
        find_pin(self.shared, self.process, s, end, phys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cache, Options, Raw};

    /// A slot that a live pin counts on survives leaving the thread's list
    /// (the pin holds a plain reference to it); one nobody counts on is
    /// freed, and [`LAST`] forgets both.
    #[test]
    fn a_slot_a_pin_counts_on_is_never_freed() {
        let d = crate::testing::TestDir::new("slot-leak");
        let cache = Cache::open(d.join("c"), Options::new().capacity(8 << 20)).unwrap();
        cache.set("k", &Raw(b"v")).unwrap();
        let shared = cache.shared_arc();
        let g = cache.get::<Raw>("k").unwrap().unwrap();
        let weak = SLOTS.with(|v| Rc::downgrade(&v.borrow().0[0]));
        assert_eq!(LAST.get().0, shared.id);
        SLOTS.with(|v| v.borrow_mut().remove(|_| false));
        assert_eq!(LAST.get(), NO_SLOT);
        assert!(weak.upgrade().is_some(), "freed under a live guard");
        drop(g); // unpins through the kept slot
        let weak = {
            let slot = ThreadSlot::get(shared).unwrap(); // claims a new one
            assert!(slot.stripes.iter().all(|p| p.count.get() == 0));
            SLOTS.with(|v| Rc::downgrade(&v.borrow().0[0]))
        };
        SLOTS.with(|v| v.borrow_mut().remove(|_| false));
        assert!(weak.upgrade().is_none(), "an unpinned slot is freed");
        drop(cache);
    }

    /// A live reader slot marked for plain pins, holding no pin: an evictor
    /// that issued the barrier sees no pin; one that could not must treat
    /// the slot as pinning (it cannot know what the slot's owner stored).
    #[test]
    fn an_evictor_without_the_barrier_waits_for_plain_pin_slots() {
        let d = crate::testing::TestDir::new("plain-pins");
        let cache = Cache::open(d.join("c"), Options::new().capacity(8 << 20)).unwrap();
        cache.set("k", &Raw(b"v")).unwrap();
        let (claimed, done) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        std::thread::scope(|t| {
            let (tx, rx) = (claimed.0, done.1);
            let c = &cache;
            t.spawn(move || {
                assert!(c.get::<Raw>("k").unwrap().is_some()); // claims a slot
                tx.send(()).unwrap();
                rx.recv().unwrap(); // keeps it until the checks are done
            });
            claimed.1.recv().unwrap();
            let shared = cache.shared_arc();
            let pr = shared.process().unwrap();
            let plain = barrier::register();
            let marked = (0..shared.geo.reader_slots)
                .filter(|&i| shared.map.counters(i).pin_fence.load(Ordering::SeqCst) == PINS_PLAIN)
                .count();
            assert_eq!(
                marked, plain as usize,
                "the reader's slot is marked iff registered"
            );
            let end = u64::MAX;
            assert_eq!(scan_pins(shared, pr, 0, end, 0, true).unwrap(), None);
            let blind = scan_pins(shared, pr, 0, end, 0, false).unwrap();
            assert_eq!(blind.is_some(), plain, "{blind:?}");
            done.0.send(()).unwrap();
        });
        drop(cache);
    }
}
