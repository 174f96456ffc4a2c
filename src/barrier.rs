//! The asymmetric fence of the pin protocol (format.md §5.5): a reader
//! whose process is registered for `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`
//! publishes its pin with a plain store and no fence ([`light`]); an
//! evictor, before it scans the pins, makes every thread of every
//! registered process execute a full memory barrier ([`heavy`]). Where the
//! system call is missing (not Linux, a kernel before 4.16, a seccomp
//! filter), nothing registers, readers keep the sequentially consistent
//! pin, and an evictor that cannot issue the barrier never relies on it.
//!
//! Registration is per process (per address space) and is redone by a
//! fork child (the pid changes), before its first reader slot is claimed.

use std::sync::atomic::{compiler_fence, Ordering};

/// The reader's half: keeps the compiler from moving the pin store after
/// the tail load that follows it. The processor may still do so; the
/// evictor's [`heavy`] barrier orders both against its own tail store and
/// pin scan (format.md §5.5).
#[inline(always)]
pub(crate) fn light() {
    compiler_fence(Ordering::SeqCst);
}

#[cfg(target_os = "linux")]
mod sys {
    use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

    // <linux/membarrier.h>; the libc crate does not define them.
    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    /// The pid of the process that registered, plus one (0: none yet): a
    /// fork child has another pid, so it registers for itself.
    static REGISTERED_PID: AtomicU32 = AtomicU32::new(0);
    /// Whether the registration of `REGISTERED_PID` succeeded (1) or not (2).
    static REGISTERED: AtomicU8 = AtomicU8::new(0);
    /// Whether this process can issue the barrier: 0 unknown, 1 yes, 2 no.
    static CAN_ISSUE: AtomicU8 = AtomicU8::new(0);

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier(2) takes two integers and touches no memory of
        // ours; an unknown command or a filtered call only returns -1.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    /// Whether the kernel offers both commands we need.
    fn supported() -> bool {
        let mask = membarrier(MEMBARRIER_CMD_QUERY);
        let need = (MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
            as libc::c_long;
        mask >= 0 && mask & need == need
    }

    pub(crate) fn register() -> bool {
        let me = std::process::id().wrapping_add(1);
        if REGISTERED_PID.load(Ordering::Acquire) == me {
            return REGISTERED.load(Ordering::Acquire) == 1;
        }
        // Registering, then issuing one barrier: a process that registered
        // but could not issue the barrier (a filter on one command) would
        // be trusted by evictors it cannot protect itself against.
        let ok = supported()
            && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
            && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
        REGISTERED.store(if ok { 1 } else { 2 }, Ordering::Release);
        REGISTERED_PID.store(me, Ordering::Release);
        ok
    }

    pub(crate) fn heavy() -> bool {
        if CAN_ISSUE.load(Ordering::Relaxed) == 2 {
            return false;
        }
        let ok = membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
        CAN_ISSUE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        ok
    }
}

/// Registers this process so that evictors may trust its plain pin
/// stores; `true` when it did (then, and only then, a reader slot it
/// claims is marked for plain pins). Idempotent; a system call only on
/// the first call of a process.
pub(crate) fn register() -> bool {
    #[cfg(target_os = "linux")]
    {
        sys::register()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The evictor's half: a full memory barrier on every running thread of
/// every registered process, ordered after everything this thread did
/// before (its tail store) and before everything it does after (its pin
/// scan). `false` when it could not be issued: the caller must then treat
/// every live slot marked for plain pins as pinning.
pub(crate) fn heavy() -> bool {
    #[cfg(target_os = "linux")]
    {
        sys::heavy()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_registered_process_can_issue_the_barrier() {
        // Where registration works, so must the barrier (register() proves
        // it once); where it does not, evictors must see that too.
        if super::register() {
            assert!(super::heavy());
        }
        assert_eq!(super::register(), super::register(), "idempotent");
    }
}
