/*
 * Wine 8.0 does not implement FileAllocationInformation in
 * NtSetInformationFile: SetFileInformationByHandle(FileAllocationInfo)
 * fails with ERROR_CALL_NOT_IMPLEMENTED (120), while Windows reserves the
 * space. fs4's `allocate` uses it, so slotcache falls back to extending the
 * file (src/shared.rs, `preallocate`).
 *
 * Expected on Windows: both calls "ok". Under Wine 8.0: the first FAILED, 120.
 */
#include <windows.h>
#include <stdio.h>

int main(void)
{
    const char *name = "allocation-repro.bin";
    HANDLE h = CreateFileA(name, GENERIC_READ | GENERIC_WRITE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("CreateFile failed: %lu\n", GetLastError());
        return 1;
    }
    FILE_ALLOCATION_INFO alloc;
    alloc.AllocationSize.QuadPart = 1 << 20;
    BOOL ok = SetFileInformationByHandle(h, FileAllocationInfo, &alloc, sizeof alloc);
    printf("SetFileInformationByHandle(FileAllocationInfo): %s, GetLastError=%lu\n",
           ok ? "ok" : "FAILED", ok ? 0 : GetLastError());
    FILE_END_OF_FILE_INFO eof;
    eof.EndOfFile.QuadPart = 1 << 20;
    ok = SetFileInformationByHandle(h, FileEndOfFileInfo, &eof, sizeof eof);
    printf("SetFileInformationByHandle(FileEndOfFileInfo): %s, GetLastError=%lu\n",
           ok ? "ok" : "FAILED", ok ? 0 : GetLastError());
    CloseHandle(h);
    DeleteFileA(name);
    return 0;
}
