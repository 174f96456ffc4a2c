//! The host's invalidation subscriber and the shared words it keeps in the
//! cache file's header (format.md §2.1 and §5.12): the epoch, the stream's
//! heartbeat and the per-key invalidation sequences.
//!
//! One process per host (per cache file) subscribes: every process runs a
//! candidate thread that tries, every `retry_interval`, a non-blocking
//! byte-range lock of the file (`2^62 + 5·2^32`, format.md §6); the holder
//! subscribes, the kernel releases the lock when it dies and another
//! candidate takes over.

use super::Inner;
pub(crate) use crate::clock::now_ns;
use crate::layout::header::{SharedHeader, TIERED_SEQ_WORDS};
use redis::{PushKind, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

impl Inner {
    /// The header words this module keeps (`tiered_epoch`,
    /// `tiered_heartbeat`, `tiered_seqs`).
    pub(crate) fn header(&self) -> &SharedHeader {
        self.l1.shared_header()
    }

    /// The sequence word of `key` (an L2 key): `xxh3(key) % 128`.
    fn seq_word(&self, key: &[u8]) -> &AtomicU64 {
        let i = xxhash_rust::xxh3::xxh3_64(key) % TIERED_SEQ_WORDS as u64;
        &self.header().tiered_seqs[i as usize]
    }

    pub(crate) fn seq(&self, key: &[u8]) -> u64 {
        self.seq_word(key).load(Ordering::SeqCst)
    }

    /// What the subscriber does for an invalidated key: bump its sequence
    /// (refusing fills in flight), then drop the L1 entry.
    pub(crate) fn invalidate_local(&self, key: &[u8]) {
        self.seq_word(key).fetch_add(1, Ordering::SeqCst);
        let _ = self.l1.delete(key);
    }

    /// The epoch to store with an entry filled now, and whether entries
    /// stored with it are trusted now: the stream is up (even, non-zero
    /// epoch) and its heartbeat is recent.
    pub(crate) fn epoch_now(&self) -> (u64, bool) {
        let e = self.header().tiered_epoch.load(Ordering::SeqCst);
        let hb = self.header().tiered_heartbeat.load(Ordering::Relaxed);
        let fresh = now_ns().saturating_sub(hb) <= self.opts.stream_timeout.as_nanos() as u64;
        (e, e != 0 && e % 2 == 0 && fresh)
    }

    /// Moves the epoch to the next even value (stream up, or a flush: every
    /// entry filled before is unverified).
    fn epoch_up(&self) {
        let w = &self.header().tiered_epoch;
        let _ = w.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| Some((e | 1) + 1));
        self.header()
            .tiered_heartbeat
            .store(now_ns(), Ordering::Relaxed);
        self.stats.epoch_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the epoch to an odd value (stream down), unless it is already.
    fn epoch_down(&self) {
        let w = &self.header().tiered_epoch;
        if w.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| {
            (e % 2 == 0).then_some(e + 1)
        })
        .is_ok()
        {
            self.stats.epoch_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The candidate thread: until shutdown, win the election, then
    /// subscribe for as long as this process lives.
    pub(crate) fn candidate(&self) {
        let elect = Election::new(self.l1.path());
        while !self.stopping() {
            if elect.as_ref().is_none_or(|e| e.try_win()) {
                // The previous subscriber (if any) is gone: what it would
                // have applied since is lost, so nothing filled under its
                // epoch is trusted any more, even before its heartbeat
                // goes stale.
                self.epoch_down();
                self.stats.subscriber.store(1, Ordering::Relaxed);
                while !self.stopping() {
                    self.subscribe_once();
                    if !self.stopping() {
                        self.epoch_down();
                        self.pause(self.opts.retry_interval);
                    }
                }
                return; // the lock goes with the thread's `Election`
            }
            self.pause(self.opts.retry_interval);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20).min(d));
        }
    }

    /// One connection of the stream: returns when it is lost (or shutdown).
    fn subscribe_once(&self) {
        let Ok(mut con) = self.stream_client().and_then(|c| {
            let con = c.get_connection_with_timeout(self.opts.io_timeout)?;
            con.set_write_timeout(Some(self.opts.io_timeout))?;
            con.set_read_timeout(Some(self.opts.io_timeout))?;
            Ok(con)
        }) else {
            return;
        };
        let tracked = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("on")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(self.opts.prefix.as_bytes())
            .arg("PREFIX")
            .arg(&self.hb_key)
            .query::<()>(&mut con);
        if tracked.is_err() {
            return;
        }
        // Tracking is on: any write Redis executes from now on reaches us.
        self.epoch_up();
        let tick = (self.opts.heartbeat / 4).max(Duration::from_millis(5));
        if con.set_read_timeout(Some(tick)).is_err() {
            return;
        }
        let mut last_seen = Instant::now();
        let mut last_sent: Option<Instant> = None;
        let mut beat = 0u64;
        while !self.stopping() {
            if last_sent.is_none_or(|t| t.elapsed() >= self.opts.heartbeat) {
                beat += 1;
                let hb = self.hb_key.clone();
                let _ = self.l2.set(&hb, &beat.to_le_bytes(), Some(60_000));
                last_sent = Some(Instant::now());
            }
            match con.recv_response() {
                Ok(Value::Push {
                    kind: PushKind::Invalidate,
                    data,
                }) => {
                    if self.on_invalidate(data) {
                        last_seen = Instant::now();
                        self.header()
                            .tiered_heartbeat
                            .store(now_ns(), Ordering::Relaxed);
                    }
                }
                Ok(Value::Push {
                    kind: PushKind::Disconnection,
                    ..
                }) => return,
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(_) => return,
            }
            if last_seen.elapsed() > self.opts.stream_timeout {
                return; // heartbeats are not coming back: treat as lost
            }
        }
    }

    /// Applies one `invalidate` push; returns whether it carried this
    /// host's heartbeat key.
    fn on_invalidate(&self, data: Vec<Value>) -> bool {
        let mut heartbeat = false;
        match data.into_iter().next() {
            // FLUSHALL / FLUSHDB: every entry filled so far is unverified.
            Some(Value::Nil) | None => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.epoch_up();
            }
            Some(Value::Array(keys)) | Some(Value::Set(keys)) => {
                for k in keys {
                    let Value::BulkString(k) = k else { continue };
                    if k == self.hb_key {
                        heartbeat = true;
                        continue;
                    }
                    self.invalidate_local(&k);
                    // Counted once applied (tests wait on the count).
                    self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(_) => {}
        }
        heartbeat
    }

    fn stream_client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.l2.client().get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(settings))
    }
}

/// A held election lock (or a candidate's handle to try one): an open file
/// description of the cache file with an OFD byte-range lock on it. Linux
/// only; elsewhere every process subscribes (correct, with more
/// connections).
struct Election {
    #[cfg(target_os = "linux")]
    file: std::fs::File,
}

impl Election {
    /// Opens the candidate's own description of the cache file, recorded
    /// for the fork handler (`crate::fork`): a child forked without `exec`
    /// gets a new description in place of this one, so it never holds the
    /// election lock, and a dead subscriber's role is taken over even while
    /// its children live.
    #[cfg(target_os = "linux")]
    fn new(path: &std::path::Path) -> Option<Election> {
        use std::os::fd::AsRawFd;
        // Write access: an exclusive lock needs it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ok()?;
        crate::fork::register_lock_file(file.as_raw_fd(), true);
        Some(Election { file })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_: &std::path::Path) -> Option<Election> {
        None
    }

    #[cfg(target_os = "linux")]
    fn try_win(&self) -> bool {
        use crate::layout::locks::TIERED_ELECT;
        use crate::locks::{lock, Mode};
        lock(&self.file, TIERED_ELECT, Mode::Exclusive, false).unwrap_or(false)
    }

    #[cfg(not(target_os = "linux"))]
    fn try_win(&self) -> bool {
        true
    }
}

#[cfg(target_os = "linux")]
impl Drop for Election {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Before the descriptor closes (the field drops after this).
        crate::fork::unregister_open_file(self.file.as_raw_fd(), 0);
    }
}
