/*
 * Wine keeps FILE_ATTRIBUTE_READONLY as the Unix permission bits of the
 * file, and root ignores those: under Wine run as root (as CI runs), a
 * read-only file opens for writing. Windows refuses everyone with
 * ERROR_ACCESS_DENIED (5). tests/files.rs checks slotcache's read-only
 * fallback on Windows only where the host enforces the attribute.
 *
 * Expected on Windows: "refused, GetLastError=5". Under Wine as root: GRANTED.
 */
#include <windows.h>
#include <stdio.h>

int main(void)
{
    const char *name = "readonly-repro.bin";
    HANDLE h = CreateFileA(name, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("CreateFile failed: %lu\n", GetLastError());
        return 1;
    }
    CloseHandle(h);
    SetFileAttributesA(name, FILE_ATTRIBUTE_READONLY);
    h = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                    OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("open a FILE_ATTRIBUTE_READONLY file for writing: refused, GetLastError=%lu\n",
               GetLastError());
    } else {
        printf("open a FILE_ATTRIBUTE_READONLY file for writing: GRANTED\n");
        CloseHandle(h);
    }
    SetFileAttributesA(name, FILE_ATTRIBUTE_NORMAL);
    DeleteFileA(name);
    return 0;
}
