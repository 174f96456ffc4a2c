//! CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), the checksum
//! of a log record (format.md §2.6). On x86-64 with SSE4.2 (detected once
//! per process by the standard library, then one load per call) it runs
//! on the `crc32` instruction, eight bytes per instruction; elsewhere on a
//! slice-by-8 table. Both give the same value (tested).

/// The reflected CRC-32C polynomial.
const POLY: u32 = 0x82F6_3B78;

/// `TABLES[0]` is the byte-at-a-time table; `TABLES[k][i]` is the CRC of
/// byte `i` followed by `k` zero bytes (slice-by-8).
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = (c >> 1) ^ (POLY & (c & 1).wrapping_neg());
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// An incremental CRC-32C, for a checksum over several parts.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A checksum over no bytes yet.
    pub fn new() -> Crc32c {
        Crc32c(!0)
    }

    /// Adds `bytes`.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = update(self.0, bytes);
    }

    /// The checksum of everything added.
    #[inline]
    pub fn finalize(self) -> u32 {
        !self.0
    }
}

/// The CRC-32C of `bytes`.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    !update(!0, bytes)
}

/// Advances the raw (un-inverted) state `crc` over `bytes`.
#[inline]
fn update(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the processor has SSE4.2 (detected just above), the one
        // requirement of `update_sse42`.
        return unsafe { update_sse42(crc, bytes) };
    }
    update_table(crc, bytes)
}

/// [`update`] on the `crc32` instruction.
///
/// # Safety
/// The processor must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = crc as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        #[allow(unused_unsafe)]
        // SAFETY: SSE4.2 is enabled in this function (its contract); the
        // intrinsic only computes on registers. (Safe in newer Rust.)
        let next = unsafe { _mm_crc32_u64(c, v) };
        c = next;
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        #[allow(unused_unsafe)]
        // SAFETY: as above.
        let next = unsafe { _mm_crc32_u8(c, b) };
        c = next;
    }
    c
}

/// [`update`] on the slice-by-8 tables (any processor).
fn update_table(mut crc: u32, bytes: &[u8]) -> u32 {
    let t = &TABLES;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ crc as u64;
        let b = |i: u32| ((v >> (8 * i)) & 0xFF) as usize;
        crc = t[7][b(0)]
            ^ t[6][b(1)]
            ^ t[5][b(2)]
            ^ t[4][b(3)]
            ^ t[3][b(4)]
            ^ t[2][b(5)]
            ^ t[1][b(6)]
            ^ t[0][b(7)];
    }
    for &b in words.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ b as u32) & 0xFF) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_paths_agree() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!update_table(!0, b"123456789"), 0xE306_9283);
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 63, 148, 1000] {
            let d = &data[..len];
            assert_eq!(crc32c(d), !update_table(!0, d), "length {len}");
            let mut parts = Crc32c::new();
            parts.update(&d[..len / 3]);
            parts.update(&d[len / 3..]);
            assert_eq!(parts.finalize(), crc32c(d), "in two parts, length {len}");
        }
        let mut flipped = data[..148].to_vec();
        flipped[100] ^= 4;
        assert_ne!(crc32c(&flipped), crc32c(&data[..148]));
    }
}
