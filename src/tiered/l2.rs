//! The Redis side (L2): a small pool of sync connections with timeouts, a
//! circuit breaker that fails fast while Redis is unreachable, and the
//! scripts of the fleet lease.

use redis::{Client, Connection, RedisResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `SET key value [PX ms]` only while `key` still holds the lease token:
/// the lease holder's fill. A writer's `SET`/`DEL` of the key voids the
/// lease, so a creator that was slow (or paused) past it writes nothing.
const FILL_IF_LEASED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  return 1
end
return 0";

/// `PEXPIRE key ms` only while `key` still holds the lease token.
const EXTEND_IF_LEASED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// `DEL key` only while `key` still holds the lease token.
const RELEASE_IF_LEASED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// `SET key value [PX ms]` and `DEL` of the side lease only while the side
/// lease key (`KEYS[2]`) holds the token: the fill of a
/// [`Lease`](super::Lease) holder. A writer's `set`/`delete` deletes the
/// side key, which voids the lease.
const FILL_IF_SIDE_LEASED: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  redis.call('DEL', KEYS[2])
  return 1
end
return 0";

/// What L2 holds under a key.
pub(crate) enum Held {
    /// A value with its remaining TTL in ms (`None`: no expiry).
    Value(Vec<u8>, Option<u64>),
    /// A lease token: some host is creating the value.
    Lease,
    /// Nothing.
    Absent,
}

/// The first bytes of every lease token (never a value slotcache writes).
pub(crate) const LEASE_MAGIC: &[u8] = b"\0slotcache-lease\0";

pub(crate) struct L2 {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    io_timeout: Duration,
    retry_interval: Duration,
    /// Monotonic ms (since `t0`) before which no connection is attempted
    /// after a failure (0: none pending).
    down_until: AtomicU64,
    t0: Instant,
    fill_script: redis::Script,
    extend_script: redis::Script,
    release_script: redis::Script,
    side_fill_script: redis::Script,
}

impl L2 {
    pub(crate) fn new(
        url: &str,
        io_timeout: Duration,
        retry_interval: Duration,
    ) -> RedisResult<L2> {
        Ok(L2 {
            client: Client::open(url)?,
            idle: Mutex::new(Vec::new()),
            io_timeout,
            retry_interval,
            down_until: AtomicU64::new(0),
            t0: Instant::now(),
            fill_script: redis::Script::new(FILL_IF_LEASED),
            extend_script: redis::Script::new(EXTEND_IF_LEASED),
            release_script: redis::Script::new(RELEASE_IF_LEASED),
            side_fill_script: redis::Script::new(FILL_IF_SIDE_LEASED),
        })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Runs `f` on a pooled connection (a new one if none is idle). A
    /// failed call drops its connection and opens the circuit breaker for
    /// `retry_interval`: calls meanwhile fail at once, without a system call.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut con = match pooled {
            Some(c) => c,
            None => {
                if self.now_ms() < self.down_until.load(Ordering::Relaxed) {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "Redis marked unreachable (retrying soon)",
                    )));
                }
                match self.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        self.mark_down();
                        return Err(e);
                    }
                }
            }
        };
        match f(&mut con) {
            Ok(v) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(con);
                Ok(v)
            }
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    // Every idle connection is suspect too.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    self.mark_down();
                } else {
                    self.idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(con);
                }
                Err(e)
            }
        }
    }

    fn mark_down(&self) {
        let until = self.now_ms() + self.retry_interval.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
    }

    /// A new connection with the I/O timeouts set.
    pub(crate) fn connect(&self) -> RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(self.io_timeout)?;
        con.set_read_timeout(Some(self.io_timeout))?;
        con.set_write_timeout(Some(self.io_timeout))?;
        Ok(con)
    }

    /// `GET` and `PTTL` of `key` as one transaction (`MULTI`/`EXEC`).
    pub(crate) fn fetch(&self, key: &[u8]) -> RedisResult<Held> {
        let (v, pttl): (Option<Vec<u8>>, i64) = self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(key)
                .cmd("PTTL")
                .arg(key)
                .query(c)
        })?;
        Ok(match v {
            None => Held::Absent,
            Some(v) if v.starts_with(LEASE_MAGIC) => Held::Lease,
            // PTTL -2: gone between the two commands (cannot happen in a
            // transaction, kept for safety); -1: no expiry.
            Some(_) if pttl == -2 => Held::Absent,
            Some(v) => Held::Value(v, u64::try_from(pttl).ok()),
        })
    }

    pub(crate) fn set(&self, key: &[u8], value: &[u8], ttl_ms: Option<u64>) -> RedisResult<()> {
        self.with(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value);
            if let Some(ms) = ttl_ms {
                cmd.arg("PX").arg(ms.max(1));
            }
            cmd.query::<()>(c)
        })
    }

    /// `SET key value [PX ms]` and `DEL side` (voids a side lease), in
    /// one transaction.
    pub(crate) fn set_voiding(
        &self,
        key: &[u8],
        side: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> RedisResult<()> {
        self.with(|c| {
            let mut p = redis::pipe();
            p.atomic();
            let cmd = p.cmd("SET").arg(key).arg(value);
            if let Some(ms) = ttl_ms {
                cmd.arg("PX").arg(ms.max(1));
            }
            p.ignore().cmd("DEL").arg(side).ignore();
            p.query::<()>(c)
        })
    }

    /// `DEL key side`: the value and any side lease.
    pub(crate) fn delete(&self, key: &[u8], side: &[u8]) -> RedisResult<()> {
        self.with(|c| redis::cmd("DEL").arg(key).arg(side).query::<()>(c))
    }

    /// The side lease holder's fill: whether the value was written (the
    /// side key still held `token`).
    pub(crate) fn fill_side_leased(
        &self,
        key: &[u8],
        side: &[u8],
        token: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> RedisResult<bool> {
        self.with(|c| {
            let n: i64 = self
                .side_fill_script
                .key(key)
                .key(side)
                .arg(token)
                .arg(value)
                .arg(ttl_ms.map_or(0, |m| m.max(1)))
                .invoke(c)?;
            Ok(n == 1)
        })
    }

    /// `SET key token NX PX lease`: whether this caller now holds the lease.
    pub(crate) fn take_lease(&self, key: &[u8], token: &[u8], lease_ms: u64) -> RedisResult<bool> {
        self.with(|c| {
            let r: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms.max(1))
                .query(c)?;
            Ok(r.is_some())
        })
    }

    /// The lease holder's fill: whether the value was written (the key
    /// still held `token`).
    pub(crate) fn fill_leased(
        &self,
        key: &[u8],
        token: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> RedisResult<bool> {
        self.with(|c| {
            let n: i64 = self
                .fill_script
                .key(key)
                .arg(token)
                .arg(value)
                .arg(ttl_ms.map_or(0, |m| m.max(1)))
                .invoke(c)?;
            Ok(n == 1)
        })
    }

    /// Extends the lease while the key still holds `token`.
    pub(crate) fn extend_lease(
        &self,
        key: &[u8],
        token: &[u8],
        lease_ms: u64,
    ) -> RedisResult<bool> {
        self.with(|c| {
            let n: i64 = self
                .extend_script
                .key(key)
                .arg(token)
                .arg(lease_ms.max(1))
                .invoke(c)?;
            Ok(n == 1)
        })
    }

    /// Gives the lease back (deletes the key) while it still holds `token`.
    pub(crate) fn release_lease(&self, key: &[u8], token: &[u8]) -> RedisResult<bool> {
        self.with(|c| {
            let n: i64 = self.release_script.key(key).arg(token).invoke(c)?;
            Ok(n == 1)
        })
    }
}
