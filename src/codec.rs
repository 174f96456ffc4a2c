//! How values are stored and read back: [`Value`] (the sealed value-kind
//! abstraction every read and write of [`Cache`](crate::Cache) is generic
//! over), [`Raw`] bytes, [`FromView`] for owned copies, and the rkyv
//! bounds and schema fingerprint of typed values.

use crate::error::{Error, Result};
use crate::layout::kind;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Bounds for typed values [`Cache::set`](crate::Cache::set) can serialize.
pub trait Storable:
    for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> Storable for T where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Bounds for archived values [`Cache::get`](crate::Cache::get) can
/// validate.
pub trait Checkable: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> {}
impl<T: ?Sized> Checkable for T where T: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> {}

/// The schema fingerprint stored with values of type `T`: a hash of the
/// type's name and the size and alignment of its archived form. Values
/// stored as one type are misses when read as another.
pub fn schema_fingerprint<T: Archive>() -> u64 {
    let name = std::any::type_name::<T>();
    let size = std::mem::size_of::<T::Archived>() as u64;
    let align = std::mem::align_of::<T::Archived>() as u64;
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), size << 8 | align);
    h.max(1)
}

/// The rkyv format flags of this build, measured rather than assumed:
/// bit 0 little-endian, bit 1 aligned, bits 4..8 pointer width in bytes.
pub(crate) fn rkyv_flags() -> u32 {
    let probe = rkyv::to_bytes::<rkyv::rancor::Error>(&0x0102_0304u32).expect("u32 serializes");
    let little = (probe[0] == 0x04) as u32;
    let aligned = (std::mem::align_of::<rkyv::Archived<u32>>() == 4) as u32;
    let width = std::mem::size_of::<rkyv::Archived<usize>>() as u32;
    little | (aligned << 1) | (width << 4)
}

/// How a value was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ValueKind {
    /// Raw bytes (a [`Raw`] value).
    Raw,
    /// An rkyv archive (any other [`Value`]); see
    /// [`Entry::schema`](crate::Entry::schema).
    Archived,
}

impl ValueKind {
    /// The kind of a record header's kind byte (`RecordHeader::decode`
    /// admits only the two).
    pub(crate) fn of_record(k: u8) -> ValueKind {
        match k {
            kind::ARCHIVED => ValueKind::Archived,
            _ => ValueKind::Raw,
        }
    }
}

/// Raw bytes, stored as they are (record kind 1): no rkyv, no schema.
///
/// `B` is anything that holds bytes: `Raw(b"hello")`, `Raw(&vec[..])`,
/// `Raw(vec)`. Writing a `Raw` copies its bytes straight into the file;
/// reading one ([`Cache::get::<Raw>`](crate::Cache::get)) gives a guard
/// that derefs to `[u8]`, and [`Cache::get_owned::<Raw>`](crate::Cache::get_owned)
/// a `Raw<Vec<u8>>`.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-raw-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Options, Raw};
/// let cache = Cache::open(dir.join("raw.cache"), Options::new().capacity(8 << 20))?;
/// cache.set("greeting", &Raw(b"hello"))?;
/// assert_eq!(&*cache.get::<Raw>("greeting")?.unwrap(), b"hello");
/// assert_eq!(cache.get_owned::<Raw>("greeting")?, Some(Raw(b"hello".to_vec())));
/// // Raw bytes are not an archive of any type: a typed read is a miss.
/// assert!(cache.get::<u64>("greeting")?.is_none());
/// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Raw<B = Vec<u8>>(pub B);

impl<B: AsRef<[u8]>> AsRef<[u8]> for Raw<B> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

pub(crate) mod sealed {
    use super::*;

    /// The bytes a value is written as: borrowed from a [`Raw`] (no copy),
    /// or an rkyv archive.
    pub enum Encoded<'a> {
        /// Raw bytes, written as they are.
        Borrowed(&'a [u8]),
        /// A serialized archive.
        Owned(AlignedVec),
    }

    impl std::ops::Deref for Encoded<'_> {
        type Target = [u8];
        #[inline]
        fn deref(&self) -> &[u8] {
            match self {
                Encoded::Borrowed(b) => b,
                Encoded::Owned(v) => v,
            }
        }
    }

    /// The crate-private half of [`Value`]: how a value is encoded and how
    /// stored bytes are checked. Not nameable outside the crate, so only
    /// the crate implements [`Value`].
    pub trait Sealed {
        /// The record kind byte.
        const KIND: u8;
        /// The schema fingerprint stored with the value (0 for raw bytes).
        fn schema() -> u64;
        /// The bytes to store.
        fn encode(&self) -> Result<Encoded<'_>>;
        /// Checks stored bytes (`bytecheck` for an archive) and views them.
        fn view(bytes: &[u8]) -> Option<&<Self as Value>::View>
        where
            Self: Value;
    }

    impl<T> Sealed for T
    where
        T: Archive + Storable,
        T::Archived: Checkable,
    {
        const KIND: u8 = kind::ARCHIVED;
        #[inline]
        fn schema() -> u64 {
            schema_fingerprint::<T>()
        }
        fn encode(&self) -> Result<Encoded<'_>> {
            rkyv::to_bytes::<rancor::Error>(self)
                .map(Encoded::Owned)
                .map_err(Error::serialize)
        }
        #[inline]
        fn view(bytes: &[u8]) -> Option<&<T as Value>::View> {
            rkyv::access::<T::Archived, rancor::Error>(bytes).ok()
        }
    }

    impl<B: AsRef<[u8]>> Sealed for Raw<B> {
        const KIND: u8 = kind::BYTES;
        #[inline]
        fn schema() -> u64 {
            0
        }
        #[inline]
        fn encode(&self) -> Result<Encoded<'_>> {
            Ok(Encoded::Borrowed(self.0.as_ref()))
        }
        #[inline]
        fn view(bytes: &[u8]) -> Option<&<Raw<B> as Value>::View> {
            Some(bytes)
        }
    }
}

pub(crate) use sealed::{Encoded, Sealed};

/// How values of a type are stored and read back. Every read and write of
/// [`Cache`](crate::Cache) is generic over it.
///
/// Sealed (the crate keeps control of the encoding); implemented for
/// - every rkyv type (`T: Archive + Storable` with `T::Archived: Checkable`,
///   which `#[derive(rkyv::Archive, rkyv::Serialize)]` gives): stored as an
///   archive (record kind 2) with its type's
///   [`schema_fingerprint`]; read back as `T::Archived`, validated with
///   `bytecheck`;
/// - [`Raw<B>`](Raw): stored as the bytes themselves (record kind 1, schema
///   0); read back as `[u8]`.
///
/// A value stored as one kind or type is a miss when read as another.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-value-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Guard, Options, Raw, Value};
///
/// /// Works for typed values and raw bytes alike.
/// fn fetch<'c, V: Value>(cache: &'c Cache, key: &str) -> slotcache::Result<Option<Guard<'c, V::View>>> {
///     cache.get::<V>(key)
/// }
///
/// let cache = Cache::open(dir.join("value.cache"), Options::new().capacity(8 << 20))?;
/// cache.set("n", &7u32)?;
/// cache.set("b", &Raw([1u8, 2, 3]))?;
/// assert_eq!(*fetch::<u32>(&cache, "n")?.unwrap(), 7);
/// assert_eq!(&*fetch::<Raw>(&cache, "b")?.unwrap(), [1, 2, 3]);
/// assert!(fetch::<Raw>(&cache, "n")?.is_none(), "an archive is not raw bytes");
/// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
pub trait Value: Sealed {
    /// What a [`Guard`](crate::Guard) of this value derefs to:
    /// `T::Archived` for a typed value, `[u8]` for [`Raw`].
    type View: ?Sized;
}

impl<T> Value for T
where
    T: Archive + Storable,
    T::Archived: Checkable,
{
    type View = T::Archived;
}

impl<B: AsRef<[u8]>> Value for Raw<B> {
    type View = [u8];
}

/// Values that can be rebuilt, owned, from their [`View`](Value::View):
/// rkyv types by deserializing (`rkyv::deserialize`), `Raw<Vec<u8>>` by
/// copying the bytes. Used by [`Cache::get_owned`](crate::Cache::get_owned)
/// and [`Fetched::into_owned`](crate::Fetched::into_owned).
pub trait FromView: Value + Sized {
    /// The owned value of a view.
    fn from_view(view: &Self::View) -> Result<Self>;
}

impl<T> FromView for T
where
    T: Archive + Storable,
    T::Archived: Checkable + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn from_view(view: &T::Archived) -> Result<T> {
        rkyv::deserialize::<T, rancor::Error>(view).map_err(Error::deserialize)
    }
}

impl FromView for Raw<Vec<u8>> {
    fn from_view(view: &[u8]) -> Result<Self> {
        Ok(Raw(view.to_vec()))
    }
}
