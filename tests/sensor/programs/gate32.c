/*
 * System calls through the 32-bit gate (`int $0x80`) from a 64-bit program, and the
 * execveat variants, for tests/sensor/test_blind_spots.py.
 * Build: gcc -no-pie -O1 -o gate32 gate32.c   (static buffers below 4 GiB, so their
 * addresses fit the ia32 ABI's 32-bit registers).
 * Usage: gate32 <action> <arg>; exit status 0 when the call returned what was expected.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl) */
#define NR32_OPEN 5
#define NR32_CLOSE 6
#define NR32_UNLINK 10
#define NR32_EXECVE 11
#define NR32_PTRACE 26
#define NR32_SETUID32 213
#define NR32_SOCKET 359
#define NR32_CONNECT 362

static char path[4096];
static char marker[256];
static char true_path[] = "/bin/true";
static unsigned int argv32[3];
static unsigned char sin[16];

static long sys32(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    strncpy(path, argv[2], sizeof(path) - 1);
    strncpy(marker, argv[2], sizeof(marker) - 1);
    const char *act = argv[1];
    if (!strcmp(act, "open")) {            /* open(path, O_RDONLY) */
        long fd = sys32(NR32_OPEN, (long)path, O_RDONLY, 0);
        if (fd >= 0)
            sys32(NR32_CLOSE, fd, 0, 0);
        return fd >= 0 ? 0 : 1;
    }
    if (!strcmp(act, "unlink"))
        return sys32(NR32_UNLINK, (long)path, 0, 0) == 0 ? 0 : 1;
    if (!strcmp(act, "setuid"))            /* setuid32(0): root stays root */
        return sys32(NR32_SETUID32, 0, 0, 0) == 0 ? 0 : 1;
    if (!strcmp(act, "ptrace"))            /* PTRACE_TRACEME */
        return sys32(NR32_PTRACE, 0, 0, 0) == 0 ? 0 : 1;
    if (!strcmp(act, "connect")) {         /* connect to 127.0.0.1:<arg> (refused is fine) */
        long s = sys32(NR32_SOCKET, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
        int port = 0;
        for (const char *p = argv[2]; *p >= '0' && *p <= '9'; p++)
            port = port * 10 + (*p - '0');
        sin[0] = 2;                        /* sin_family, little endian */
        sin[2] = port >> 8;                /* sin_port, network order */
        sin[3] = port & 0xff;
        sin[4] = 127;
        sin[7] = 1;
        sys32(NR32_CONNECT, s, (long)sin, sizeof(sin));
        return s >= 0 ? 0 : 1;
    }
    if (!strcmp(act, "execve")) {          /* execve("/bin/true", ["/bin/true", marker]) */
        argv32[0] = (unsigned int)(unsigned long)true_path;
        argv32[1] = (unsigned int)(unsigned long)marker;
        sys32(NR32_EXECVE, (long)true_path, (long)argv32, 0);
        return 1;
    }
    if (!strcmp(act, "execveat-empty")) {  /* execveat(fd, "", argv, NULL, AT_EMPTY_PATH) */
        int fd = open("/bin/cat", O_RDONLY | O_CLOEXEC);
        char *av[] = {"cat", path, NULL};
        syscall(SYS_execveat, fd, "", av, NULL, AT_EMPTY_PATH);
        return 1;
    }
    if (!strcmp(act, "execveat-dirfd")) {  /* execveat(dirfd of /bin, "cat", ...) */
        int fd = open("/bin", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char *av[] = {"cat", path, NULL};
        syscall(SYS_execveat, fd, "cat", av, NULL, 0);
        return 1;
    }
    if (!strcmp(act, "execveat-fail")) {   /* a failing execveat: ENOENT */
        char *av[] = {"nope", path, NULL};
        return syscall(SYS_execveat, AT_FDCWD, path, av, NULL, 0) == -1 ? 0 : 1;
    }
    return 2;
}
