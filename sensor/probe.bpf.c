// SPDX-License-Identifier: Apache-2.0
/*
 * Falconer's kernel side, compiled by bcc when the sensor starts.
 *
 * Why it is shaped like this:
 * - One hook for system calls: the raw tracepoint raw_syscalls:sys_exit (no perf record
 *   is built; one program call per syscall). Arguments are read at exit from the saved
 *   registers, so there is no per-thread stash and nothing can be "lost in flight".
 *   Per-syscall tracepoints (syscalls:sys_exit_*) would leave unwatched syscalls
 *   cheaper, but the kernel never fires them for 32-bit (ia32) system calls
 *   (ARCH_TRACE_IGNORE_COMPAT_SYSCALLS on x86): an attacker's `int $0x80` would be
 *   invisible. Here ia32 numbers are mapped to their x86_64 equivalents (map compat_nr).
 * - execve's arguments are gone from memory at exit; a successful exec is described
 *   from the new image instead (argv, environment and AT_EXECFN from mm_struct), which
 *   is what Falco's exec events carry too.
 * - Kernel struct offsets come from the running kernel's BTF (sensor/btf.py, -D OFF_*).
 * - Every constant shared with user space (record kinds, counters, forward modes, sizes)
 *   comes from sensor/kernelabi.py as -D flags: this file defines none of them.
 * - The rule-derived filter: for a syscall with a filter group, an absolute, normalised
 *   path that matches no entry of the group in the LPM trie `paths` (exact paths end in
 *   their NUL, prefixes do not) never leaves the kernel; neither does the close of a
 *   descriptor whose open was dropped so (a bit per descriptor in map unforwarded_fds:
 *   a lookup and an atomic or/and per open and close, no map insert or delete).
 * - Every lost record is counted in a per-CPU map, never silently dropped.
 * - The reader is woken only when a CPU has a share of the ring unannounced
 *   (FALCONER_WAKEUP_SHARE): otherwise it reads at its timed poll, in batches.
 */

struct falconer_event {
    u64 ts_ns;          /* CLOCK_MONOTONIC at the hook */
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gid;
    s32 nr;             /* x86_64 syscall number (ia32 ones mapped), -1 for task records */
    u16 kind;
    u16 argc;           /* argv strings read (0 with RF_ARGV_FROM_MM: count the NULs) */
    s64 ret;
    u64 args[6];
    u16 len_a;          /* bytes in data: path a (with its NUL), 0 = absent */
    u16 len_b;          /* path b */
    u16 len_sock;       /* socket address */
    u16 len_argv;       /* argv strings, NUL-separated */
    u16 len_env;        /* environment strings, NUL-separated */
    u16 flags;          /* RF_* */
    u16 len_local;      /* the socket's local address (connect), a sockaddr */
    u16 len_exe;        /* KIND_EXEC: a struct falconer_exec_data */
    u64 cap_inheritable;    /* the thread's capability sets at the hook (bit n = */
    u64 cap_permitted;      /* capability n), from its objective credentials as */
    u64 cap_effective;      /* /proc/<tid>/status shows them */
    u8 data[2 * FALCONER_DATA_HALF];   /* the pieces above, packed in that order */
};

/* The executable file of a new image (KIND_EXEC data): proc.exe_ino.* */
struct falconer_exe_stat {
    u64 ino;
    s64 ctime_ns;
    s64 mtime_ns;
};

/* One hierarchy's cgroup of a task at exec: the names of its kernfs nodes, leaf first
 * (the root's, "", is never among them). */
struct falconer_cgroup_names {
    u8 levels;          /* names read, 0 .. FALCONER_CGROUP_LEVELS */
    u8 cut;             /* 1: the group has ancestors above the last name read */
    u8 pad[6];
    char name[FALCONER_CGROUP_LEVELS][FALCONER_CGROUP_NAME];
};

/* The data of a KIND_EXEC record. cgroup[0]: the hierarchy of controller
 * ENUM_CGROUP_SUBSYS (memory; on cgroup v2 the unified one), cgroup[1]: cgroup v2's. */
struct falconer_exec_data {
    struct falconer_exe_stat exe;
    struct falconer_cgroup_names cgroup[FALCONER_CGROUP_HIERARCHIES];
};

/* What to read for one syscall number. Arg indexes are stored +1 (0 = none). */
struct falconer_spec {
    u8 forward;
    u8 path_a;
    u8 path_b;
    u8 argv;
    u8 sock;
    u8 sock_len;
    u8 sock_when;
    u8 deref;           /* arg holding a pointer to a struct whose first u64 ... */
    u8 deref_to;        /* ... replaces this arg (clone3's flags, openat2's how.flags) */
    u8 filter;          /* rule-derived path filter group of path_a, 0 = none */
    u8 fd_ret;          /* the return value is a new descriptor */
    u8 open_flags;      /* arg holding open(2) flags (+1) */
    u8 sock_local;      /* arg holding a socket whose local address to read (+1) */
    u8 compat_watched;  /* this number is an ia32 syscall whose x86_64 twin is forwarded */
};

/* LPM trie key: group byte, then the path; prefixlen counts bits after itself. */
struct falconer_path_key {
    u32 prefixlen;
    u8 group;
    char path[FALCONER_KEY_PATH];
};

/* One process: pids are reused, so it is named by its tgid and its leader's start time
 * (a stale entry can then never hit a new process). */
struct falconer_proc_key {
    u64 start_ns;       /* group_leader->start_time */
    u32 tgid;
    u32 pad;
};

/* The descriptors of a process whose open the filter kept in the kernel: bit fd % 64 of
 * word fd / 64, for fd < FALCONER_FD_BITS (an open returning a higher one is forwarded). */
struct falconer_fd_bits {
    u64 w[FALCONER_FD_BITS / 64];
};

/* The first two members of the user-space struct msghdr (x86_64 ABI). */
struct falconer_msghdr_head {
    u64 name;
    u32 namelen;
};

BPF_RINGBUF_OUTPUT(events, FALCONER_RING_PAGES);
BPF_ARRAY(specs, struct falconer_spec, FALCONER_MAX_SYSCALLS);
BPF_ARRAY(compat_nr, s32, FALCONER_MAX_SYSCALLS);   /* ia32 nr -> x86_64 nr, -1 none */
BPF_ARRAY(config, u32, 1);                          /* [0] = the sensor's own tgid */
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
/* One record under construction per CPU (programs run with migration disabled). Not a
 * per-CPU map: those cap a value at 32 KiB, and a record with whole paths, argv and
 * environment is larger. */
BPF_ARRAY(scratch, struct falconer_event, FALCONER_NCPU);
BPF_PERCPU_ARRAY(key_scratch, struct falconer_path_key, 2);   /* path, reversed path */
BPF_F_TABLE("lpm_trie", struct falconer_path_key, u8, paths, FALCONER_MAX_PATHS,
            BPF_F_NO_PREALLOC);
/* An evicted process only makes its closes forwarded: user space ignores the close of
 * a descriptor it does not know. */
BPF_TABLE("lru_hash", struct falconer_proc_key, struct falconer_fd_bits, unforwarded_fds,
          FALCONER_MAX_PROCS);
BPF_ARRAY(no_fd_bits, struct falconer_fd_bits, 1);   /* all zero: a new process's value */
/* Bytes this CPU submitted since it last woke the reader. */
BPF_PERCPU_ARRAY(unannounced, u64, 1);

#define WAKEUP_BYTES (FALCONER_RING_PAGES * PAGE_SIZE / (FALCONER_WAKEUP_SHARE * FALCONER_NCPU))

static __always_inline void count(u32 which)
{
    u64 *c = counters.lookup(&which);
    if (c)
        *c += 1;
}

/* The submit flags of a record of `size` bytes: wake the reader only when this CPU's
 * unannounced bytes reach WAKEUP_BYTES. */
static __always_inline u64 wakeup_flags(u64 size)
{
    u32 zero = 0;
    u64 *n = unannounced.lookup(&zero);
    if (!n)
        return 0;
    *n += size;
    if (*n < WAKEUP_BYTES)
        return BPF_RB_NO_WAKEUP;
    *n = 0;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline int is_self(u32 tgid)
{
    u32 zero = 0;
    u32 *self = config.lookup(&zero);
    return self && *self == tgid;
}

static __always_inline u64 kread(const void *base, u32 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 kread32(const void *base, u32 off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

/* The current thread's capability sets into the record header (task->real_cred:
 * kernel_cap_t is one u64 since 6.3, two u32 words in that order before). struct cred
 * keeps the three sets next to each other in the header's order: then one read. */
static __always_inline void read_caps(struct falconer_event *e, void *task)
{
    void *cred = (void *)kread(task, OFF_TASK_REAL_CRED);
    if (OFF_CRED_CAP_PERMITTED == OFF_CRED_CAP_INHERITABLE + 8
        && OFF_CRED_CAP_EFFECTIVE == OFF_CRED_CAP_INHERITABLE + 16) {
        if (!cred || bpf_probe_read_kernel(&e->cap_inheritable, 24,
                                           (char *)cred + OFF_CRED_CAP_INHERITABLE) != 0)
            e->cap_inheritable = e->cap_permitted = e->cap_effective = 0;
        return;
    }
    e->cap_inheritable = cred ? kread(cred, OFF_CRED_CAP_INHERITABLE) : 0;
    e->cap_permitted = cred ? kread(cred, OFF_CRED_CAP_PERMITTED) : 0;
    e->cap_effective = cred ? kread(cred, OFF_CRED_CAP_EFFECTIVE) : 0;
}

/* Arg indexes in specs are stored +1 so that 0 means "none". */
static __always_inline u64 arg_at(struct falconer_event *e, u8 idx1)
{
    u32 i = idx1 ? idx1 - 1 : 0;
    if (i > 5)
        i = 5;
    return e->args[i];
}

/* Where the next piece goes in data (bounded for the verifier). */
static __always_inline u32 used(struct falconer_event *e)
{
    u32 n = (u32)e->len_a + e->len_b + e->len_sock + e->len_argv + e->len_env + e->len_local;
    return n & (FALCONER_DATA_HALF - 1);
}

/* A user string appended to data; its length with the NUL, 0 if unreadable. */
static __always_inline u16 read_str(struct falconer_event *e, u64 uptr)
{
    long n = bpf_probe_read_user_str(&e->data[used(e)], FALCONER_STR_LEN, (void *)uptr);
    if (n == FALCONER_STR_LEN)
        e->flags |= RF_TRUNCATED;
    return n > 0 ? n : 0;
}

/* `len` bytes of user memory appended to data (bounded by `max`). */
static __always_inline u16 read_block(struct falconer_event *e, u64 uptr, u64 len, u32 max)
{
    if (len > max) {
        len = max;
        e->flags |= RF_TRUNCATED;
    }
    asm volatile("" : "+r"(len));
    if (len == 0 || len > FALCONER_ARGV_LEN)
        return 0;
    if (bpf_probe_read_user(&e->data[used(e)], len, (void *)uptr) != 0)
        return 0;
    return len;
}

/* argv from the caller's array (a failed exec: the old image is still there). */
static __always_inline void read_argv_array(struct falconer_event *e, u64 uargv)
{
    u16 argc = 0;
    const char *const *av = (const char *const *)uargv;
#pragma unroll
    for (int i = 0; i < FALCONER_MAX_ARGS; i++) {
        const char *p = NULL;
        if (bpf_probe_read_user(&p, sizeof(p), &av[i]) < 0 || !p)
            break;
        if (e->len_argv >= FALCONER_ARGV_LEN - FALCONER_STR_LEN) {
            e->flags |= RF_TRUNCATED;
            break;
        }
        long n = bpf_probe_read_user_str(&e->data[used(e)], FALCONER_STR_LEN, p);
        if (n <= 0)
            break;
        e->len_argv += n;
        argc++;
    }
    e->argc = argc;
}

/* A successful exec: argv, environment and the file name from the new image. */
static __always_inline void read_exec_image(struct falconer_event *e, void *task)
{
    void *mm = (void *)kread(task, OFF_TASK_MM);
    if (!mm)
        return;
    u64 arg_start = kread(mm, OFF_MM_ARG_START), arg_end = kread(mm, OFF_MM_ARG_END);
    u64 env_start = kread(mm, OFF_MM_ENV_START), env_end = kread(mm, OFF_MM_ENV_END);
    /* AT_EXECFN: the kernel copies the file name right above the environment. */
    e->len_a = read_str(e, env_end);
    e->len_argv = read_block(e, arg_start, arg_end - arg_start, FALCONER_ARGV_LEN);
    e->flags |= RF_ARGV_FROM_MM;
    e->len_env = read_block(e, env_start, env_end - env_start, FALCONER_ENV_LEN);
}

static __always_inline void read_sockaddr(struct falconer_event *e, u64 uaddr, u64 len)
{
    len &= 0xffffffff;   /* socklen_t */
    if (!uaddr || len == 0)
        return;
    if (len > FALCONER_SOCK_LEN)
        len = FALCONER_SOCK_LEN;
    asm volatile("" : "+r"(len));
    if (len > FALCONER_SOCK_LEN)
        return;
    if (bpf_probe_read_user(&e->data[used(e)], len, (void *)uaddr) == 0)
        e->len_sock = len;
}

static __always_inline void read_sock(struct falconer_event *e, struct falconer_spec *spec)
{
    u8 when = spec->sock_when;
    if (!spec->sock)
        return;
    if (when == SOCK_ENTER_LEN_VALUE) {
        read_sockaddr(e, arg_at(e, spec->sock), (u32)arg_at(e, spec->sock_len));
    } else if (when == SOCK_EXIT_LEN_PTR) {
        u32 len = 0;
        u64 plen = arg_at(e, spec->sock_len);
        if (plen && bpf_probe_read_user(&len, sizeof(len), (void *)plen) == 0)
            read_sockaddr(e, arg_at(e, spec->sock), len);
    } else if ((when == SOCK_ENTER_MSGHDR || when == SOCK_EXIT_MSGHDR)
               && !(e->flags & RF_COMPAT)) {   /* struct compat_msghdr differs */
        struct falconer_msghdr_head mh = {};
        u64 pmh = arg_at(e, spec->sock);
        if (pmh && bpf_probe_read_user(&mh, sizeof(mh), (void *)pmh) == 0)
            read_sockaddr(e, mh.name, mh.namelen);
    }
}

/* The capture spec of syscall `nr` if user space asked to forward it, else NULL. */
static __always_inline struct falconer_spec *forwarded_spec(s64 nr)
{
    if (nr < 0 || nr >= FALCONER_MAX_SYSCALLS)
        return NULL;
    u32 key = nr;
    struct falconer_spec *spec = specs.lookup(&key);
    if (!spec || (spec->forward != FORWARD_EMIT && spec->forward != FORWARD_CLOSE_FILTER))
        return NULL;
    return spec;
}

static __always_inline void proc_key(struct falconer_proc_key *k, void *task, u32 tgid)
{
    void *leader = (void *)kread(task, OFF_TASK_GROUP_LEADER);
    k->start_ns = leader ? kread(leader, OFF_TASK_START_TIME) : 0;
    k->tgid = tgid;
    k->pad = 0;
}

#define FD_WORD(fd) (((u32)(fd) / 64) & (FALCONER_FD_BITS / 64 - 1))
#define FD_MASK(fd) (1ULL << ((u32)(fd) & 63))

/* The descriptor bits of the current process, NULL when `fd` is out of their range or
 * the process has none (made, all clear, when `create`; NULL if the map refuses). */
static __always_inline struct falconer_fd_bits *fd_bits(void *task, u32 tgid, s64 fd, int create)
{
    if (fd < 0 || fd >= FALCONER_FD_BITS)
        return NULL;
    struct falconer_proc_key k;
    proc_key(&k, task, tgid);
    struct falconer_fd_bits *b = unforwarded_fds.lookup(&k);
    if (b || !create)
        return b;
    u32 zero = 0;
    struct falconer_fd_bits *none = no_fd_bits.lookup(&zero);
    if (!none)
        return NULL;
    unforwarded_fds.insert(&k, none);
    return unforwarded_fds.lookup(&k);
}

/* Mark descriptor `fd` of the current process as kept in the kernel; 0 if it cannot be
 * (out of range, map full): then the open must be forwarded. */
static __always_inline int fd_keep(void *task, u32 tgid, s64 fd)
{
    struct falconer_fd_bits *b = fd_bits(task, tgid, fd, 1);
    if (!b)
        return 0;
    __sync_fetch_and_or(&b->w[FD_WORD(fd)], FD_MASK(fd));
    return 1;
}

/* Whether descriptor `fd` of the current process was kept in the kernel; its bit is
 * cleared (it is closed, or now names a forwarded open). */
static __always_inline int fd_take(void *task, u32 tgid, s64 fd)
{
    struct falconer_fd_bits *b = fd_bits(task, tgid, fd, 0);
    if (!b || !(b->w[FD_WORD(fd)] & FD_MASK(fd)))
        return 0;
    __sync_fetch_and_and(&b->w[FD_WORD(fd)], ~FD_MASK(fd));
    return 1;
}

/* The struct file * of descriptor `fd` of the current task, NULL if none. */
static __always_inline void *fd_file(void *task, s64 fd)
{
    void *files = (void *)kread(task, OFF_TASK_FILES);
    if (!files || fd < 0)
        return NULL;
    void *fdt = (void *)kread(files, OFF_FILES_FDT);
    if (!fdt || fd >= kread32(fdt, OFF_FDT_MAX_FDS))
        return NULL;
    void **fds = (void **)kread(fdt, OFF_FDT_FD);
    void *file = NULL;
    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xffffff]);
    return file;
}

/* The local address of socket descriptor `fd` appended as a sockaddr_in/_in6. */
static __always_inline void read_sock_local(struct falconer_event *e, void *task, s64 fd)
{
    void *file = fd_file(task, fd);
    if (!file)
        return;
    void *sock = (void *)kread(file, OFF_FILE_PRIVATE);
    void *sk = sock ? (void *)kread(sock, OFF_SOCKET_SK) : NULL;
    if (!sk)
        return;
    u16 family = 0, port = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (char *)sk + OFF_SK_FAMILY);
    bpf_probe_read_kernel(&port, sizeof(port), (char *)sk + OFF_SK_NUM);
    u8 *out = &e->data[used(e)];
    if (family != FALCONER_AF_INET && family != FALCONER_AF_INET6)
        return;
    __builtin_memset(out, 0, 28);
    *(u16 *)out = family;
    out[2] = port >> 8;   /* sin_port: network order; skc_num is host order */
    out[3] = port & 0xff;
    if (family == FALCONER_AF_INET) {
        bpf_probe_read_kernel(out + 4, 4, (char *)sk + OFF_SK_RCV_SADDR);
        e->len_local = 16;
    } else {
        bpf_probe_read_kernel(out + 8, 16, (char *)sk + OFF_SK_V6_RCV_SADDR);
        e->len_local = 28;
    }
}

/* Whether descriptor `fd` of the current task is a directory (state needs those). */
static __always_inline int fd_is_dir(void *task, s64 fd)
{
    void *file = fd_file(task, fd);
    if (!file)
        return 1;
    void *inode = (void *)kread(file, OFF_FILE_INODE);
    u16 mode = 0;
    bpf_probe_read_kernel(&mode, sizeof(mode), (char *)inode + OFF_INODE_MODE);
    return (mode & 00170000) == 0040000;   /* S_ISDIR */
}

/* Whether the rule-derived filter lets this record through. Path a is compared only
 * when it is absolute with no "//", "/." or ".." and no trailing "/": then it is what
 * fd.name shows (and rules looking for "../" cannot match it). Exact paths and prefixes are looked up in the
 * LPM trie under the syscall's group, suffixes as prefixes of the reversed path under
 * the group with FILTER_REVERSED. */
static __always_inline int passes_filter(struct falconer_event *e, struct falconer_spec *spec,
                                         void *task)
{
    if (!spec->filter)
        return 1;
    u32 len = e->len_a;   /* with its NUL */
    if (len < 2 || len > FALCONER_KEY_PATH || e->data[0] != '/')
        return 1;
    len -= 1;
    u32 zero = 0, one = 1;
    struct falconer_path_key *k = key_scratch.lookup(&zero);
    struct falconer_path_key *r = key_scratch.lookup(&one);
    if (!k || !r)
        return 1;
    char prev = 0;
    for (u32 i = 0; i < FALCONER_KEY_PATH; i++) {
        if (i >= len) {
            k->path[i] = 0;   /* exact entries end in their NUL */
            break;
        }
        char c = e->data[i];
        if ((prev == '/' && (c == '/' || c == '.')) || (prev == '.' && c == '.'))
            return 1;
        k->path[i] = c;
        u32 j = len - 1 - i;
        if (j < FALCONER_KEY_PATH)
            r->path[j] = c;
        prev = c;
    }
    if (prev == '/')
        return 1;
    k->prefixlen = 8 * (1 + len + 1);
    k->group = spec->filter;
    if (paths.lookup(k))
        return 1;
    r->prefixlen = 8 * (1 + len);
    r->group = spec->filter | FILTER_REVERSED;
    if (paths.lookup(r))
        return 1;
    /* No rule wants this path; state still needs the directories a process opens
     * (cwd via fchdir, paths relative to a dirfd). Checked last: it costs five reads. */
    if (e->ret >= 0 && spec->fd_ret) {
        if (spec->open_flags && (arg_at(e, spec->open_flags) & FALCONER_O_DIRECTORY))
            return 1;
        return fd_is_dir(task, e->ret);
    }
    return 0;
}

/* The saved registers from bp to orig_ax (x86_64 struct pt_regs keeps every syscall
 * argument register of both gates in that span): one read instead of one per argument. */
#define REGS_FIRST OFF_REGS_BP
#define REGS_WORDS ((OFF_REGS_ORIG_AX - REGS_FIRST) / 8 + 1)
#define REG(w, off) ((w)[((off) - REGS_FIRST) / 8])
_Static_assert(OFF_REGS_BP <= OFF_REGS_BX && OFF_REGS_BP <= OFF_REGS_R10 && OFF_REGS_BP <= OFF_REGS_R9
               && OFF_REGS_BP <= OFF_REGS_R8 && OFF_REGS_BP <= OFF_REGS_CX && OFF_REGS_BP <= OFF_REGS_DX
               && OFF_REGS_BP <= OFF_REGS_SI && OFF_REGS_BP <= OFF_REGS_DI
               && OFF_REGS_ORIG_AX >= OFF_REGS_DI && OFF_REGS_ORIG_AX >= OFF_REGS_SI
               && OFF_REGS_ORIG_AX >= OFF_REGS_DX && OFF_REGS_ORIG_AX >= OFF_REGS_CX
               && OFF_REGS_ORIG_AX >= OFF_REGS_BX && OFF_REGS_ORIG_AX >= OFF_REGS_R8
               && OFF_REGS_ORIG_AX >= OFF_REGS_R9 && OFF_REGS_ORIG_AX >= OFF_REGS_R10,
               "pt_regs: the argument registers lie between bp and orig_ax");

static __always_inline void read_args(struct falconer_event *e, void *regs, int compat)
{
    u64 w[REGS_WORDS] = {};
    bpf_probe_read_kernel(w, sizeof(w), (char *)regs + REGS_FIRST);
    if (compat) {   /* ebx, ecx, edx, esi, edi, ebp; 32-bit values */
        e->args[0] = (u32)REG(w, OFF_REGS_BX);
        e->args[1] = (u32)REG(w, OFF_REGS_CX);
        e->args[2] = (u32)REG(w, OFF_REGS_DX);
        e->args[3] = (u32)REG(w, OFF_REGS_SI);
        e->args[4] = (u32)REG(w, OFF_REGS_DI);
        e->args[5] = (u32)REG(w, OFF_REGS_BP);
    } else {
        e->args[0] = REG(w, OFF_REGS_DI);
        e->args[1] = REG(w, OFF_REGS_SI);
        e->args[2] = REG(w, OFF_REGS_DX);
        e->args[3] = REG(w, OFF_REGS_R10);
        e->args[4] = REG(w, OFF_REGS_R8);
        e->args[5] = REG(w, OFF_REGS_R9);
    }
}

/* How much of a record to send: the header and the data in use. */
#define HEADER_BYTES offsetof(struct falconer_event, data)

RAW_TRACEPOINT_PROBE(sys_exit)
{
    void *regs = (void *)ctx->args[0];
    s64 nr = kread(regs, OFF_REGS_ORIG_AX);
    /* Cheapest test first: most syscalls are neither forwarded nor the number of a
     * watched ia32 syscall (one array lookup, no look at the task). */
    if (nr < 0 || nr >= FALCONER_MAX_SYSCALLS)
        return 0;
    u32 k = nr;
    struct falconer_spec *spec = specs.lookup(&k);
    if (!spec || (spec->forward == FORWARD_NO && !spec->compat_watched))
        return 0;
    void *task = (void *)bpf_get_current_task();
    int compat = kread32(task, OFF_TASK_STATUS) & FALCONER_TS_COMPAT;
    if (compat) {
        s32 *mapped = compat_nr.lookup(&k);
        if (!mapped || *mapped < 0)
            return 0;
        nr = *mapped;
    }
    spec = forwarded_spec(nr);
    if (!spec)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (is_self(tgid))
        return 0;
    s64 ret = (s64)ctx->args[1];
    if (spec->forward == FORWARD_CLOSE_FILTER && ret == 0) {
        if (fd_take(task, tgid, (s64)(s32)kread(regs, compat ? OFF_REGS_BX : OFF_REGS_DI))) {
            count(CNT_FILTERED);
            return 0;
        }
    }
    u32 cpu = bpf_get_smp_processor_id();
    struct falconer_event *e = scratch.lookup(&cpu);
    if (!e)
        return 0;
    u64 uid_gid = bpf_get_current_uid_gid();
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = tgid;
    e->tid = (u32)pid_tgid;
    e->uid = (u32)uid_gid;
    e->gid = uid_gid >> 32;
    e->nr = nr;
    e->kind = KIND_SYSCALL;
    e->argc = 0;
    e->ret = ret;
    e->flags = compat ? RF_COMPAT : 0;
    e->len_a = e->len_b = e->len_sock = e->len_argv = e->len_env = e->len_local = 0;
    read_args(e, regs, compat);
    if (spec->argv && ret == 0) {
        read_exec_image(e, task);
    } else {
        if (spec->path_a)
            e->len_a = read_str(e, arg_at(e, spec->path_a));
        if (!passes_filter(e, spec, task)
            && (!spec->fd_ret || ret < 0 || fd_keep(task, tgid, ret))) {
            count(CNT_FILTERED);
            return 0;
        }
        if (spec->path_b)
            e->len_b = read_str(e, arg_at(e, spec->path_b));
        read_sock(e, spec);
        if (spec->argv)
            read_argv_array(e, arg_at(e, spec->argv));
        if (spec->sock_local)
            read_sock_local(e, task, (s32)arg_at(e, spec->sock_local));
    }
    if (spec->deref && spec->deref_to) {
        u64 first = 0;
        bpf_probe_read_user(&first, sizeof(first), (void *)arg_at(e, spec->deref));
        u32 to = spec->deref_to - 1;
        if (to < 6)
            e->args[to] = first;
    }
    if (spec->fd_ret && ret >= 0)
        fd_take(task, tgid, ret);
    read_caps(e, task);
    u64 size = HEADER_BYTES + used(e);
    if (size > sizeof(*e))
        size = sizeof(*e);
    asm volatile("" : "+r"(size));
    if (size < HEADER_BYTES || size > sizeof(*e))
        return 0;
    if (events.ringbuf_output(e, size, wakeup_flags(size)) != 0)
        count(CNT_RING_FULL);
    else
        count(CNT_EMITTED);
    return 0;
}

/* A record without syscall payload, for the sched tracepoints. */
static __always_inline int emit_task(u16 kind, u64 a0, u64 a1, u64 a2, u64 a3)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (is_self(tgid))
        return 0;
    struct falconer_event *e = events.ringbuf_reserve(HEADER_BYTES);
    if (!e) {
        count(CNT_RING_FULL);
        return 0;
    }
    u64 uid_gid = bpf_get_current_uid_gid();
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = tgid;
    e->tid = (u32)pid_tgid;
    e->uid = (u32)uid_gid;
    e->gid = uid_gid >> 32;
    e->nr = -1;
    e->kind = kind;
    e->argc = 0;
    e->ret = 0;
    e->args[0] = a0;
    e->args[1] = a1;
    e->args[2] = a2;
    e->args[3] = a3;
    e->args[4] = e->args[5] = 0;
    e->len_a = e->len_b = e->len_sock = e->len_argv = e->len_env = e->len_local = 0;
    e->flags = 0;
    e->len_exe = 0;
    read_caps(e, (void *)bpf_get_current_task());
    events.ringbuf_submit(e, wakeup_flags(HEADER_BYTES));   /* header only */
    count(CNT_EMITTED);
    return 0;
}

/* RF_EXE_UPPER_LAYER / RF_EXE_LOWER_LAYER when `inode` is an overlayfs inode: its
 * struct ovl_inode has an upper dentry once the file exists in the upper layer
 * (written, or copied up, in the container). OFF_OVL_* are -1 when no BTF described
 * struct ovl_inode at load time (overlay a module not loaded yet): then neither flag. */
static __always_inline u16 overlay_layer(void *inode)
{
    if (OFF_OVL_VFS_INODE < 0 || OFF_OVL_UPPERDENTRY < 0)
        return 0;
    void *sb = (void *)kread(inode, OFF_INODE_SB);
    if (!sb || kread(sb, OFF_SB_MAGIC) != FALCONER_OVERLAYFS_SUPER_MAGIC)
        return 0;
    void *ovl = (char *)inode - OFF_OVL_VFS_INODE;
    return kread(ovl, OFF_OVL_UPPERDENTRY) ? RF_EXE_UPPER_LAYER : RF_EXE_LOWER_LAYER;
}

/* The inode number, ctime and mtime of the current task's executable, and its overlayfs
 * layer into the record's flags. */
static __always_inline void exe_stat(struct falconer_event *e, void *task,
                                     struct falconer_exe_stat *st)
{
    void *mm = (void *)kread(task, OFF_TASK_MM);
    void *file = mm ? (void *)kread(mm, OFF_MM_EXE_FILE) : NULL;
    void *inode = file ? (void *)kread(file, OFF_FILE_INODE) : NULL;
    if (!inode)
        return;
    e->flags |= overlay_layer(inode);
    /* Nanoseconds are < 2^30; above that, multigrain timestamps (6.13+) keep flags in
     * i_ctime_nsec (I_CTIME_QUERIED, bit 31): masked off. */
    st->ino = kread(inode, OFF_INODE_INO);
    st->ctime_ns = (s64)kread(inode, OFF_INODE_CTIME_SEC) * 1000000000
                   + (kread32(inode, OFF_INODE_CTIME_NSEC) & 0x3fffffff);
    st->mtime_ns = (s64)kread(inode, OFF_INODE_MTIME_SEC) * 1000000000
                   + (kread32(inode, OFF_INODE_MTIME_NSEC) & 0x3fffffff);
}

/* The names of cgroup `cgrp`'s kernfs node and its ancestors, leaf first, up to
 * FALCONER_CGROUP_LEVELS (kn->name of each; the root, whose parent is NULL, left out). */
static __always_inline void read_cgroup(struct falconer_event *e,
                                        struct falconer_cgroup_names *out, void *cgrp)
{
    void *kn = cgrp ? (void *)kread(cgrp, OFF_CGROUP_KN) : NULL;
    out->levels = out->cut = 0;
#pragma unroll
    for (int i = 0; i < FALCONER_CGROUP_LEVELS; i++) {
        void *parent = kn ? (void *)kread(kn, OFF_KN_PARENT) : NULL;
        if (!parent)
            return;
        const char *name = (const char *)kread(kn, OFF_KN_NAME);
        long n = bpf_probe_read_kernel_str(out->name[i], FALCONER_CGROUP_NAME, name);
        if (n <= 0)
            out->name[i][0] = 0;
        else if (n == FALCONER_CGROUP_NAME)
            e->flags |= RF_TRUNCATED;
        out->levels = i + 1;
        kn = parent;
    }
    out->cut = kn && kread(kn, OFF_KN_PARENT);
}

/* The task's cgroups in the two hierarchies of falconer_exec_data. */
static __always_inline void read_cgroups(struct falconer_event *e,
                                         struct falconer_exec_data *x, void *task)
{
    void *cset = (void *)kread(task, OFF_TASK_CGROUPS);
    void *css = cset ? (void *)kread(cset, OFF_CSS_SET_SUBSYS + ENUM_CGROUP_SUBSYS * sizeof(void *))
                     : NULL;
    read_cgroup(e, &x->cgroup[0], css ? (void *)kread(css, OFF_CSS_CGROUP) : NULL);
    read_cgroup(e, &x->cgroup[1], cset ? (void *)kread(cset, OFF_CSS_SET_DFL_CGRP) : NULL);
}

/* Before the child runs, in the parent: the clone flags the tracker needs, derived
 * from the two tasks (so no syscall argument has to be kept):
 * args = (flags, child tid, child tgid, tgid of the child's real parent). */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    void *parent = (void *)ctx->args[0], *child = (void *)ctx->args[1];
    u32 child_tid = kread32(child, OFF_TASK_PID), child_tgid = kread32(child, OFF_TASK_TGID);
    u64 flags = 0;
    if (child_tgid == kread32(parent, OFF_TASK_TGID))
        flags |= CLONE_THREAD;
    if (kread(child, OFF_TASK_FILES) == kread(parent, OFF_TASK_FILES))
        flags |= CLONE_FILES;
    if (kread(child, OFF_TASK_VFORK_DONE))
        flags |= CLONE_VFORK | CLONE_VM;
    void *real_parent = (void *)kread(child, OFF_TASK_REAL_PARENT);
    return emit_task(KIND_FORK, flags, child_tid, child_tgid,
                     kread32(real_parent, OFF_TASK_TGID));
}

/* The pid number of `pid` (struct pid *) at namespace `level`, 0 if it has none there. */
static __always_inline u32 pid_nr_at(void *pid, u32 level)
{
    if (!pid || level > FALCONER_MAX_PID_LEVEL || level > kread32(pid, OFF_PID_LEVEL))
        return 0;
    return kread32(pid, OFF_PID_NUMBERS + level * SIZE_UPID + OFF_UPID_NR);
}

/* The controlling terminal as /proc/<pid>/stat's tty_nr (new_encode_dev), 0 if none. */
static __always_inline u64 tty_nr(void *signal)
{
    void *tty = (void *)kread(signal, OFF_SIGNAL_TTY);
    if (!tty)
        return 0;
    void *driver = (void *)kread(tty, OFF_TTY_DRIVER);
    u32 major = kread32(driver, OFF_DRIVER_MAJOR);
    u32 minor = kread32(driver, OFF_DRIVER_MINOR_START) + kread32(tty, OFF_TTY_INDEX);
    return (minor & 0xff) | (major << 8) | ((u64)(minor & ~0xffU) << 12);
}

/* After the new image is in place: the session, process group and terminal as of now
 * (setsid/setpgid/TIOCSCTTY since the fork are in them), the pid and process group
 * in the process's own pid namespace, the executable's inode and the task's cgroups
 * (a runtime moves a container's first process into its cgroup before this exec). */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    void *task = (void *)bpf_get_current_task();
    void *signal = (void *)kread(task, OFF_TASK_SIGNAL);
    void *own = (void *)kread(task, OFF_TASK_THREAD_PID);
    void *pgrp = (void *)kread(signal, OFF_SIGNAL_PIDS + FALCONER_PIDTYPE_PGID * sizeof(void *));
    void *session = (void *)kread(signal, OFF_SIGNAL_PIDS + FALCONER_PIDTYPE_SID * sizeof(void *));
    u32 level = own ? kread32(own, OFF_PID_LEVEL) : 0;
    u64 ids = pid_nr_at(session, 0) | ((u64)pid_nr_at(pgrp, 0) << 32);
    u64 vids = pid_nr_at(own, level) | ((u64)pid_nr_at(pgrp, level) << 32);
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid >> 32))
        return 0;
    u32 size = HEADER_BYTES + sizeof(struct falconer_exec_data);
    struct falconer_event *e = events.ringbuf_reserve(size);
    if (!e) {
        count(CNT_RING_FULL);
        return 0;
    }
    u64 uid_gid = bpf_get_current_uid_gid();
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = pid_tgid >> 32;
    e->tid = (u32)pid_tgid;
    e->uid = (u32)uid_gid;
    e->gid = uid_gid >> 32;
    e->nr = -1;
    e->kind = KIND_EXEC;
    e->argc = 0;
    e->ret = 0;
    e->args[0] = args->old_pid;
    e->args[1] = args->pid;
    e->args[2] = ids;
    e->args[3] = tty_nr(signal);
    e->args[4] = vids;
    e->args[5] = 0;
    e->len_a = e->len_b = e->len_sock = e->len_argv = e->len_env = e->len_local = 0;
    e->flags = 0;
    e->len_exe = sizeof(struct falconer_exec_data);
    struct falconer_exec_data *x = (struct falconer_exec_data *)e->data;
    x->exe.ino = 0;
    x->exe.ctime_ns = x->exe.mtime_ns = 0;
    exe_stat(e, task, &x->exe);
    read_cgroups(e, x, task);
    read_caps(e, task);
    events.ringbuf_submit(e, wakeup_flags(size));
    count(CNT_EMITTED);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    return emit_task(KIND_EXIT, 0, 0, 0, 0);
}
