//! Log records (format.md §2.6): a 48-byte [`RecordHeader`], the key, then
//! the value aligned to 16 bytes. A record is written once, before any
//! index slot names it, and never changes afterwards.

use super::crc32c::{crc32c, Crc32c};
use super::{align_up, MAX_KEY_LEN, RECORD_ALIGN};
use core::mem::{offset_of, size_of};

/// Record kinds (byte 4 of a record header).
pub mod kind {
    /// Raw bytes (a `Raw` value).
    pub const BYTES: u8 = 1;
    /// An rkyv archive stored with `set`.
    pub const ARCHIVED: u8 = 2;
    /// End of the records in this segment.
    pub const END: u8 = 0xEE;
}

/// The header of one record. `#[repr(C)]`, so its field offsets are the
/// file's (asserted below); the bytes in the file are little-endian, and
/// [`encode`](Self::encode) and [`decode`](Self::decode) convert. Bytes 5..8
/// (padding here) are zero in the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC-32C of header bytes 4..48, the key, the padding and the value.
    pub crc: u32,
    /// [`kind::BYTES`] or [`kind::ARCHIVED`] ([`kind::END`] marks the end
    /// of a segment's records).
    pub kind: u8,
    /// Key length.
    pub key_len: u32,
    /// Value length.
    pub val_len: u32,
    /// xxh3 of the key with the file's seed.
    pub hash: u64,
    /// Creation time, ns since the Unix epoch.
    pub created: u64,
    /// Expiry time, ns since the Unix epoch (0 = never).
    pub expires: u64,
    /// Schema fingerprint of the value's type (0 for raw bytes).
    pub schema: u64,
}

/// Size of a record header.
pub const RECORD_HEADER: u64 = size_of::<RecordHeader>() as u64;

/// Size of an end-of-segment marker (only its first 16 bytes are written).
pub const END_MARKER: usize = 16;

const CRC: usize = offset_of!(RecordHeader, crc);
const KIND: usize = offset_of!(RecordHeader, kind);
const KEY_LEN: usize = offset_of!(RecordHeader, key_len);
const VAL_LEN: usize = offset_of!(RecordHeader, val_len);
const HASH: usize = offset_of!(RecordHeader, hash);
const CREATED: usize = offset_of!(RecordHeader, created);
const EXPIRES: usize = offset_of!(RecordHeader, expires);
const SCHEMA: usize = offset_of!(RecordHeader, schema);

// format.md §2.6, row by row.
const _: () = {
    assert!(CRC == 0);
    assert!(KIND == 4);
    assert!(KEY_LEN == 8);
    assert!(VAL_LEN == 12);
    assert!(HASH == 16);
    assert!(CREATED == 24);
    assert!(EXPIRES == 32);
    assert!(SCHEMA == 40);
    assert!(RECORD_HEADER == 48);
    assert!(END_MARKER as u64 == RECORD_ALIGN && KIND < END_MARKER);
};

/// Offset of the value from the start of a record with a `key_len`-byte key.
pub fn value_offset(key_len: usize) -> u64 {
    align_up(RECORD_HEADER + key_len as u64, RECORD_ALIGN)
}

/// Total size of a record, padding included.
pub fn record_size(key_len: usize, val_len: usize) -> u64 {
    align_up(value_offset(key_len) + val_len as u64, RECORD_ALIGN)
}

fn get32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn get64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl RecordHeader {
    /// Encodes the header, computing the CRC over it, `key` and `value`.
    pub fn encode(&self, key: &[u8], value: &[u8]) -> [u8; RECORD_HEADER as usize] {
        let mut h = [0u8; RECORD_HEADER as usize];
        h[KIND] = self.kind;
        h[KEY_LEN..KEY_LEN + 4].copy_from_slice(&self.key_len.to_le_bytes());
        h[VAL_LEN..VAL_LEN + 4].copy_from_slice(&self.val_len.to_le_bytes());
        h[HASH..HASH + 8].copy_from_slice(&self.hash.to_le_bytes());
        h[CREATED..CREATED + 8].copy_from_slice(&self.created.to_le_bytes());
        h[EXPIRES..EXPIRES + 8].copy_from_slice(&self.expires.to_le_bytes());
        h[SCHEMA..SCHEMA + 8].copy_from_slice(&self.schema.to_le_bytes());
        let crc = checksum(&h, key, value);
        h[CRC..CRC + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes a header, checking only what is needed to walk the log
    /// safely: a known kind, a key no longer than [`MAX_KEY_LEN`] and a
    /// record no larger than `room` bytes. `None` for anything else
    /// (including the end marker, and fewer than 48 bytes).
    pub fn decode(h: &[u8], room: u64) -> Option<RecordHeader> {
        // One length check; the field reads below then need none.
        let h: &[u8; RECORD_HEADER as usize] = h.get(..RECORD_HEADER as usize)?.try_into().ok()?;
        let kind = h[KIND];
        if kind != kind::BYTES && kind != kind::ARCHIVED {
            return None;
        }
        let key_len = get32(h, KEY_LEN);
        let val_len = get32(h, VAL_LEN);
        if key_len as usize > MAX_KEY_LEN || record_size(key_len as usize, val_len as usize) > room
        {
            return None;
        }
        Some(RecordHeader {
            crc: get32(h, CRC),
            kind,
            key_len,
            val_len,
            hash: get64(h, HASH),
            created: get64(h, CREATED),
            expires: get64(h, EXPIRES),
            schema: get64(h, SCHEMA),
        })
    }

    /// Size of the whole record.
    pub fn size(&self) -> u64 {
        record_size(self.key_len as usize, self.val_len as usize)
    }

    /// Offset of the value from the start of the record.
    pub fn value_offset(&self) -> u64 {
        value_offset(self.key_len as usize)
    }

    /// The key inside `record` (the whole record this header was decoded
    /// from, as `decode` bounds-checked it).
    #[inline]
    pub fn key<'r>(&self, record: &'r [u8]) -> &'r [u8] {
        &record[RECORD_HEADER as usize..RECORD_HEADER as usize + self.key_len as usize]
    }

    /// The value inside `record` (as for [`key`](Self::key)).
    #[inline]
    pub fn value<'r>(&self, record: &'r [u8]) -> &'r [u8] {
        let voff = self.value_offset() as usize;
        &record[voff..voff + self.val_len as usize]
    }

    /// Whether `record` (the whole record this header was decoded from)
    /// matches its CRC.
    pub fn verify(&self, record: &[u8]) -> bool {
        let end = (self.value_offset() + self.val_len as u64) as usize;
        crc32c(&record[KIND..end]) == self.crc
    }
}

/// CRC-32C of a record's bytes from offset 4 (after the CRC itself) to the
/// end of the value: header, key, the zero padding before the value, and
/// the value — one contiguous range, so a reader checks it in one pass.
/// Computed from the parts by the writer.
pub fn checksum(header: &[u8], key: &[u8], value: &[u8]) -> u32 {
    let pad = (value_offset(key.len()) - RECORD_HEADER) as usize - key.len();
    let mut c = Crc32c::new();
    c.update(&header[KIND..RECORD_HEADER as usize]);
    c.update(key);
    c.update(&[0u8; RECORD_ALIGN as usize][..pad]);
    c.update(value);
    c.finalize()
}

/// The end-of-segment marker written where a segment's records end.
pub fn end_marker() -> [u8; END_MARKER] {
    let mut m = [0u8; END_MARKER];
    m[KIND] = kind::END;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_aligned() {
        assert_eq!(value_offset(0), 48);
        assert_eq!(value_offset(1), 64);
        assert_eq!(value_offset(16), 64);
        assert_eq!(record_size(20, 100), 80 + 112);
        assert_eq!(record_size(20, 100) % 16, 0);
    }

    #[test]
    fn encode_decode_and_crc() {
        let h = RecordHeader {
            crc: 0,
            kind: kind::BYTES,
            key_len: 3,
            val_len: 5,
            hash: 42,
            created: 7,
            expires: 9,
            schema: 0,
        };
        let bytes = h.encode(b"key", b"value");
        assert_eq!(&bytes[5..8], &[0, 0, 0], "reserved bytes are zero");
        let d = RecordHeader::decode(&bytes, 4096).unwrap();
        assert_eq!(d.crc, checksum(&bytes, b"key", b"value"));
        assert_eq!(RecordHeader { crc: d.crc, ..h }, d);
        assert_ne!(d.crc, checksum(&bytes, b"key", b"valuf"));
        let mut rec = bytes.to_vec();
        rec.extend_from_slice(b"key");
        rec.resize(value_offset(3) as usize, 0);
        rec.extend_from_slice(b"value");
        rec.resize(record_size(3, 5) as usize, 0);
        assert!(d.verify(&rec), "contiguous check agrees with the writer's");
        rec[value_offset(3) as usize] ^= 1;
        assert!(!d.verify(&rec));
        assert!(
            RecordHeader::decode(&bytes, 16).is_none(),
            "larger than room"
        );
        assert!(RecordHeader::decode(&end_marker_padded(), 4096).is_none());
    }

    fn end_marker_padded() -> [u8; 48] {
        let mut b = [0u8; 48];
        b[..END_MARKER].copy_from_slice(&end_marker());
        b
    }
}
