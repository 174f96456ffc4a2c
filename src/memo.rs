//! Memoization: the Rust counterpart of dogpile.cache's
//! `cache_on_arguments`.

use crate::cache::Cache;
use crate::codec::{Storable, Value};
use crate::dogpile::Fetched;
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::layout::MAX_KEY_LEN;
use crate::options::CreateOptions;
use rkyv::Archive;
use std::marker::PhantomData;

/// A function whose results are cached under keys built from a namespace
/// and its arguments, with dogpile protection. The results are any
/// [`Value`]: a typed value, or [`Raw`](crate::Raw) bytes.
///
/// The key is `namespace ‖ 0x00 ‖ rkyv bytes of the arguments`, or, when
/// that exceeds [`MAX_KEY_LEN`], `namespace ‖ 0x01 ‖ xxh3-128 of those
/// bytes`. rkyv's encoding is fixed by the value (not by a per-process
/// random state, unlike `std::hash::Hash` with `RandomState`), so every
/// process and every run computes the same key for the same arguments.
/// Arguments whose encoding depends on iteration order (a `HashMap`) should
/// be normalised (sorted) first.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-memo-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Memo, Options};
/// let cache = Cache::open(dir.join("c"), Options::new().capacity(8 << 20))?;
/// let square = Memo::new(&cache, "square", |n: &u64| n * n);
/// assert_eq!(square.call(&12)?.into_owned()?, 144);   // computed
/// assert_eq!(*square.get(&12)?.unwrap(), 144);         // cached, zero-copy
/// square.invalidate(&12)?;
/// assert!(square.get(&12)?.is_none());
/// # drop(square); drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
pub struct Memo<A, T, F> {
    cache: Cache,
    namespace: Vec<u8>,
    f: F,
    _types: PhantomData<fn(&A) -> T>,
}

impl<A, T, F> Memo<A, T, F>
where
    A: Storable + Archive,
    T: Value,
    F: Fn(&A) -> T,
{
    /// Wraps `f`, caching its results in `cache` under `namespace`.
    pub fn new(cache: &Cache, namespace: &str, f: F) -> Self {
        Memo {
            cache: cache.clone(),
            namespace: namespace.as_bytes().to_vec(),
            f,
            _types: PhantomData,
        }
    }

    /// The cache key for `args`.
    pub fn key(&self, args: &A) -> Result<Vec<u8>> {
        let enc = rkyv::to_bytes::<rkyv::rancor::Error>(args).map_err(Error::serialize)?;
        let mut key = Vec::with_capacity(self.namespace.len() + 1 + enc.len().min(16));
        key.extend_from_slice(&self.namespace);
        if self.namespace.len() + 1 + enc.len() <= MAX_KEY_LEN {
            key.push(0);
            key.extend_from_slice(&enc);
        } else {
            key.push(1);
            key.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(&enc).to_le_bytes());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                max: MAX_KEY_LEN,
                found: key.len(),
            });
        }
        Ok(key)
    }

    /// The cached result for `args`, or `f(args)` computed (once across all
    /// callers and processes) and stored.
    pub fn call(&self, args: &A) -> Result<Fetched<'_, T>> {
        self.call_opt(args, &CreateOptions::new())
    }

    /// [`call`](Self::call) with per-call [`CreateOptions`].
    pub fn call_opt(&self, args: &A, options: &CreateOptions<'_, T>) -> Result<Fetched<'_, T>> {
        let key = self.key(args)?;
        self.cache
            .get_or_create_opt(&key, options, || (self.f)(args))
    }

    /// The cached result for `args`, without computing it.
    pub fn get(&self, args: &A) -> Result<Option<Guard<'_, T::View>>> {
        self.cache.get::<T>(self.key(args)?)
    }

    /// Stores `value` as the result for `args`.
    pub fn set(&self, args: &A, value: &T) -> Result<()> {
        self.cache.set(self.key(args)?, value)
    }

    /// Computes `f(args)` now, stores it and returns it.
    pub fn refresh(&self, args: &A) -> Result<T> {
        let value = (self.f)(args);
        self.set(args, &value)?;
        Ok(value)
    }

    /// Drops the cached result for `args`; returns whether there was one.
    pub fn invalidate(&self, args: &A) -> Result<bool> {
        self.cache.delete(self.key(args)?)
    }
}
