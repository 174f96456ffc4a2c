//! The stripe mutex table (format.md §2.2a): one [`StripeMutex`] per
//! stripe, one cache line each, right after the stripe table. In a file
//! whose stripe locks are robust pthread mutexes (format.md §6) its first
//! bytes are the stripe's `pthread_mutex_t`; in a file using byte-range
//! locks they stay zero. The header's lock word ([`LockWord`]) says which.

use core::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU64;

/// Bytes reserved for the C library's `pthread_mutex_t` (glibc: 40 on
/// x86-64, 48 on AArch64).
pub const MUTEX_BYTES: usize = 48;

/// One stripe's mutex line, as mapped.
#[repr(C, align(64))]
pub struct StripeMutex {
    /// The `pthread_mutex_t`, touched only by the C library through a
    /// pointer (atomics here only so that a reference to the line never
    /// claims the bytes are not written by another process).
    pub raw: [AtomicU64; MUTEX_BYTES / 8],
    /// Times a locker found the previous owner dead (`EOWNERDEAD`),
    /// repaired the stripe and marked the mutex consistent. Written only by
    /// the holder of the mutex.
    pub owner_deaths: AtomicU64,
    _pad: AtomicU64,
}

/// Size of one mutex line.
pub const STRIPE_MUTEX: u64 = size_of::<StripeMutex>() as u64;

// format.md §2.2a, row by row.
const _: () = {
    assert!(offset_of!(StripeMutex, raw) == 0);
    assert!(offset_of!(StripeMutex, owner_deaths) == 48);
    assert!(STRIPE_MUTEX == 64);
};

/// Stripe locks of the file: byte-range locks of the operating system
/// (every platform, and the zero word).
pub const KIND_BYTE_RANGE: u8 = 0;
/// Stripe locks of the file: process-shared robust pthread mutexes in the
/// mutex table.
pub const KIND_ROBUST: u8 = 1;
/// C library of a robust-mutex file: GNU libc.
pub const LIBC_GLIBC: u8 = 1;
/// Architecture of a robust-mutex file: x86-64.
pub const ARCH_X86_64: u8 = 1;
/// Architecture of a robust-mutex file: AArch64.
pub const ARCH_AARCH64: u8 = 2;

/// The header's lock word (format.md §2.1, offset 124): which stripe locks
/// the file uses and, for mutexes, the ABI that laid them out. Byte 0 the
/// kind, byte 1 the C library, byte 2 the architecture, byte 3
/// `sizeof(pthread_mutex_t)`. All zero for byte-range locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockWord {
    /// [`KIND_BYTE_RANGE`] or [`KIND_ROBUST`].
    pub kind: u8,
    /// [`LIBC_GLIBC`] (0 for byte-range locks).
    pub libc: u8,
    /// [`ARCH_X86_64`] or [`ARCH_AARCH64`] (0 for byte-range locks).
    pub arch: u8,
    /// `sizeof(pthread_mutex_t)` (0 for byte-range locks).
    pub mutex_size: u8,
}

impl LockWord {
    /// Byte-range locks.
    pub const BYTE_RANGE: LockWord = LockWord {
        kind: KIND_BYTE_RANGE,
        libc: 0,
        arch: 0,
        mutex_size: 0,
    };

    /// Decodes the word.
    pub fn from_u32(w: u32) -> LockWord {
        let [kind, libc, arch, mutex_size] = w.to_le_bytes();
        LockWord {
            kind,
            libc,
            arch,
            mutex_size,
        }
    }

    /// Encodes the word.
    pub fn to_u32(self) -> u32 {
        u32::from_le_bytes([self.kind, self.libc, self.arch, self.mutex_size])
    }

    /// Whether the word is one this format knows (a kind it defines, and
    /// for mutexes a size that fits the line).
    pub fn is_known(self) -> bool {
        match self.kind {
            KIND_BYTE_RANGE => self == LockWord::BYTE_RANGE,
            KIND_ROBUST => {
                self.libc != 0
                    && self.arch != 0
                    && self.mutex_size != 0
                    && self.mutex_size as usize <= MUTEX_BYTES
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for LockWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            KIND_BYTE_RANGE => f.write_str("byte-range stripe locks"),
            KIND_ROBUST => {
                let libc = match self.libc {
                    LIBC_GLIBC => "glibc",
                    _ => "an unknown C library",
                };
                let arch = match self.arch {
                    ARCH_X86_64 => "x86_64",
                    ARCH_AARCH64 => "aarch64",
                    _ => "an unknown architecture",
                };
                write!(
                    f,
                    "robust pthread stripe mutexes ({libc}, {arch}, {}-byte pthread_mutex_t)",
                    self.mutex_size
                )
            }
            k => write!(f, "unknown stripe lock kind {k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_word_roundtrips_and_names_itself() {
        let w = LockWord {
            kind: KIND_ROBUST,
            libc: LIBC_GLIBC,
            arch: ARCH_X86_64,
            mutex_size: 40,
        };
        assert_eq!(LockWord::from_u32(w.to_u32()), w);
        assert!(w.is_known());
        assert_eq!(
            w.to_string(),
            "robust pthread stripe mutexes (glibc, x86_64, 40-byte pthread_mutex_t)"
        );
        assert_eq!(LockWord::BYTE_RANGE.to_u32(), 0);
        assert!(LockWord::BYTE_RANGE.is_known());
        assert!(!LockWord::from_u32(2).is_known());
        assert!(!LockWord {
            mutex_size: 64,
            ..w
        }
        .is_known());
    }
}
