/*
 * Not a Wine bug: the Windows semantics that made slotcache stop using
 * fs4's whole-file lock while opening. fs4 locks bytes [0, 2^64 - 1) with
 * LockFileEx, and that range contains every one-byte lock slotcache takes
 * at 2^62 and beyond, so it conflicts with them (on Unix the whole-file
 * lock is flock, which lives apart from fcntl byte-range locks).
 *
 * Expected on Windows and under Wine: the whole-range lock is refused
 * (GetLastError=33, ERROR_LOCK_VIOLATION) while another handle holds one
 * byte at 2^62.
 */
#include <windows.h>
#include <stdio.h>

static HANDLE open_it(const char *name)
{
    return CreateFileA(name, GENERIC_READ | GENERIC_WRITE,
                       FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, OPEN_ALWAYS,
                       FILE_ATTRIBUTE_NORMAL, NULL);
}

int main(void)
{
    const char *name = "lockrange-repro.bin";
    HANDLE a = open_it(name), b = open_it(name);
    OVERLAPPED ov = {0};
    ov.OffsetHigh = 1u << 30; /* offset 2^62 */
    BOOL ok = LockFileEx(a, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
    printf("handle A locks the byte at 2^62: %s\n", ok ? "ok" : "FAILED");
    OVERLAPPED whole = {0};
    ok = LockFileEx(b, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, ~0u, ~0u, &whole);
    printf("handle B locks [0, 2^64 - 1) as fs4 does: %s, GetLastError=%lu\n",
           ok ? "GRANTED" : "refused", ok ? 0 : GetLastError());
    CloseHandle(a);
    CloseHandle(b);
    DeleteFileA(name);
    return 0;
}
