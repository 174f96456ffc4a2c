/*
 * Test scaffolding, not part of slotcache: a stand-in for Windows'
 * bcryptprimitives.dll, which Wine 8.0 does not ship.
 *
 * Rust's standard library on Windows (since 1.78) gets its random bytes
 * from `ProcessPrng` in bcryptprimitives.dll, imported at load time. Under
 * Wine 8.0 every Rust test binary therefore fails to start. This DLL
 * exports `ProcessPrng` and forwards to `RtlGenRandom`
 * (advapi32's `SystemFunction036`), which Wine implements. `.ci/run` builds
 * it with the mingw compiler and copies it into the Wine prefix's system32.
 */
#include <windows.h>

/* RtlGenRandom; its documented export name is SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* BOOL ProcessPrng(PBYTE pbData, SIZE_T cbData): always fills the buffer. */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
