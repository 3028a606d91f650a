// SPDX-License-Identifier: Apache-2.0
/*
 * Falconer's kernel side, compiled by bcc when the sensor starts.
 *
 * Why it is shaped like this:
 * - One record layout (struct falconer_event) serves every syscall: user space
 *   decodes it with a single struct definition (sensor/record.py), checked against
 *   the layout clang gives this file (tests/sensor/test_record_layout.py).
 * - Arguments are read at sys_enter (user memory such as execve's argv is gone by
 *   sys_exit) and stashed per thread; the record is emitted at sys_exit with the
 *   return value, so one event carries arguments and result like Falco's exit events.
 * - What to read for each syscall (which args are paths, argv, socket addresses) and
 *   whether to forward it at all are maps filled by user space: the rules decide the
 *   syscall set at run time, no rule text ever reaches this file.
 * - Every lost record is counted in a per-CPU map, never silently dropped.
 *
 * Sizes come from -D flags (FALCONER_STR_LEN ...) so that user space and the kernel
 * side agree; the defaults below are used only when a flag is absent.
 */

#ifndef FALCONER_STR_LEN
#define FALCONER_STR_LEN 256
#endif
#ifndef FALCONER_ARGV_LEN
#define FALCONER_ARGV_LEN 1024
#endif
#ifndef FALCONER_MAX_ARGS
#define FALCONER_MAX_ARGS 32
#endif
#ifndef FALCONER_RING_PAGES
#define FALCONER_RING_PAGES 256
#endif
#ifndef FALCONER_MAX_SYSCALLS
#define FALCONER_MAX_SYSCALLS 512
#endif
#ifndef FALCONER_INFLIGHT
#define FALCONER_INFLIGHT 16384
#endif
#define FALCONER_SOCK_LEN 128

/* Record kinds. */
#define KIND_SYSCALL 0
#define KIND_EXEC 1
#define KIND_FORK 2
#define KIND_EXIT 3

/* Where a syscall's socket address is (struct falconer_spec.sock_when). */
#define SOCK_ENTER_LEN_VALUE 1   /* connect, sendto: addr + length by value */
#define SOCK_EXIT_LEN_PTR 2      /* accept, accept4, recvfrom: filled in by the kernel */
#define SOCK_ENTER_MSGHDR 3      /* sendmsg: msghdr->msg_name */
#define SOCK_EXIT_MSGHDR 4       /* recvmsg: msghdr->msg_name after the call */

/* falconer_spec.forward */
#define FORWARD_NO 0
#define FORWARD_EMIT 1
#define FORWARD_STASH 2   /* needed only at sched_process_fork (clone flags) */

/* Counters (per CPU). */
#define CNT_RING_FULL 0     /* ring buffer reserve failed: record lost */
#define CNT_STASH_FULL 1    /* lost in flight: table full, or exit never seen */
#define CNT_EMITTED 2       /* records handed to the ring buffer */
#define CNT_MAX 3

struct falconer_event {
    u64 ts_ns;          /* CLOCK_MONOTONIC at sys_exit / tracepoint */
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gid;
    s32 nr;             /* syscall number (KIND_SYSCALL), else the last one stashed */
    u16 kind;
    u16 argc;           /* execve: how many argv strings were read */
    s64 ret;
    u64 args[6];
    u16 len_a;          /* bytes of str_a including the NUL, 0 = absent */
    u16 len_b;
    u16 len_argv;
    u16 len_sock;
    char str_a[FALCONER_STR_LEN];
    char str_b[FALCONER_STR_LEN];
    char argv[FALCONER_ARGV_LEN];
    u8 sock[FALCONER_SOCK_LEN];
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
};

/* The first two members of the user-space struct msghdr (x86_64 ABI). */
struct falconer_msghdr_head {
    u64 name;
    u32 namelen;
};

BPF_RINGBUF_OUTPUT(events, FALCONER_RING_PAGES);
BPF_ARRAY(specs, struct falconer_spec, FALCONER_MAX_SYSCALLS);
BPF_ARRAY(config, u32, 1);                 /* [0] = the sensor's own tgid */
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_PERCPU_ARRAY(scratch, struct falconer_event, 1);
BPF_F_TABLE("hash", u32, struct falconer_event, inflight, FALCONER_INFLIGHT, BPF_F_NO_PREALLOC);

static __always_inline void count(u32 which)
{
    u64 *c = counters.lookup(&which);
    if (c)
        *c += 1;
}

static __always_inline int is_self(u32 tgid)
{
    u32 zero = 0;
    u32 *self = config.lookup(&zero);
    return self && *self == tgid;
}

/* Arg indexes in specs are stored +1 so that 0 means "none". */
static __always_inline u64 arg_at(struct falconer_event *e, u8 idx1)
{
    u32 i = idx1 ? idx1 - 1 : 0;
    if (i > 5)
        i = 5;
    return e->args[i];
}

/* A user string into a str_a/str_b slot; its length including the NUL, 0 if unreadable. */
static __always_inline u16 read_path(char *dst, u64 uptr)
{
    long n = bpf_probe_read_user_str(dst, FALCONER_STR_LEN, (void *)uptr);
    return n > 0 ? n : 0;
}

static __always_inline void read_argv(struct falconer_event *e, const char *const *uargv)
{
    u32 off = 0;
    u16 argc = 0;
#pragma unroll
    for (int i = 0; i < FALCONER_MAX_ARGS; i++) {
        const char *p = NULL;
        if (bpf_probe_read_user(&p, sizeof(p), &uargv[i]) < 0 || !p)
            break;
        if (off >= FALCONER_ARGV_LEN - FALCONER_STR_LEN)
            break;
        long n = bpf_probe_read_user_str(&e->argv[off & (FALCONER_ARGV_LEN - 1)],
                                         FALCONER_STR_LEN, p);
        if (n <= 0)
            break;
        off += n;
        argc++;
    }
    e->len_argv = off;
    e->argc = argc;
}

static __always_inline void read_sockaddr(struct falconer_event *e, u64 uaddr, u64 len)
{
    len &= 0xffffffff;   /* socklen_t */
    if (!uaddr || len == 0)
        return;
    if (len > FALCONER_SOCK_LEN)
        len = FALCONER_SOCK_LEN;
    /* keep the clamped register: the verifier must see the bound on the size it gets */
    asm volatile("" : "+r"(len));
    if (len > FALCONER_SOCK_LEN)
        return;
    if (bpf_probe_read_user(e->sock, len, (void *)uaddr) == 0)
        e->len_sock = len;
}

static __always_inline void read_sock_at(struct falconer_event *e, struct falconer_spec *spec,
                                         int at_exit)
{
    u8 when = spec->sock_when;
    if (!spec->sock)
        return;
    if (when == SOCK_ENTER_LEN_VALUE && !at_exit) {
        read_sockaddr(e, arg_at(e, spec->sock), (u32)arg_at(e, spec->sock_len));
    } else if (when == SOCK_EXIT_LEN_PTR && at_exit) {
        u32 len = 0;
        u64 plen = arg_at(e, spec->sock_len);
        if (plen && bpf_probe_read_user(&len, sizeof(len), (void *)plen) == 0)
            read_sockaddr(e, arg_at(e, spec->sock), len);
    } else if ((when == SOCK_ENTER_MSGHDR && !at_exit) || (when == SOCK_EXIT_MSGHDR && at_exit)) {
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
    if (!spec || spec->forward == FORWARD_NO)
        return NULL;
    return spec;
}

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    /* Cheapest test first: most syscalls are not forwarded (one array lookup). */
    s64 nr = args->id;
    struct falconer_spec *spec = forwarded_spec(nr);
    if (!spec)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32, tid = (u32)pid_tgid;
    if (is_self(tgid))
        return 0;
    u32 zero = 0;
    struct falconer_event *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->nr = nr;
    e->kind = KIND_SYSCALL;
    e->argc = 0;
    e->len_a = e->len_b = e->len_argv = e->len_sock = 0;
#pragma unroll
    for (int i = 0; i < 6; i++)
        e->args[i] = args->args[i];
    if (spec->path_a)
        e->len_a = read_path(e->str_a, arg_at(e, spec->path_a));
    if (spec->path_b)
        e->len_b = read_path(e->str_b, arg_at(e, spec->path_b));
    if (spec->argv)
        read_argv(e, (const char *const *)arg_at(e, spec->argv));
    if (spec->deref && spec->deref_to) {
        u64 first = 0;
        bpf_probe_read_user(&first, sizeof(first), (void *)arg_at(e, spec->deref));
        u32 to = spec->deref_to - 1;
        if (to < 6)
            e->args[to] = first;
    }
    read_sock_at(e, spec, 0);
    if (inflight.update(&tid, e) != 0)
        count(CNT_STASH_FULL);
    return 0;
}

/* How much of a record to send: the fixed header, + str_a, or all of it. */
#define SIZE_HEADER offsetof(struct falconer_event, str_a)
#define SIZE_STR_A offsetof(struct falconer_event, str_b)
#define SIZE_FULL sizeof(struct falconer_event)

TRACEPOINT_PROBE(raw_syscalls, sys_exit)
{
    /* Skip the per-thread hash lookup for syscalls that are never stashed. The exit of
     * execve sees the same number as its enter, so the test below is exact; a stash left
     * behind by a syscall that never returns (exit) is removed at sched_process_exit. */
    s64 nr = args->id;
    struct falconer_spec *spec = forwarded_spec(nr);
    if (!spec)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct falconer_event *e = inflight.lookup(&tid);
    if (!e)
        return 0;
    if (e->nr != nr) {
        /* The stashed syscall's own exit was never seen (e.g. the forwarded set changed
         * while it ran): its record is lost, and counted as an in-flight loss. */
        count(CNT_STASH_FULL);
        inflight.delete(&tid);
        return 0;
    }
    if (spec->forward != FORWARD_EMIT) {
        inflight.delete(&tid);
        return 0;
    }
    u64 uid_gid = bpf_get_current_uid_gid();
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = pid_tgid >> 32;
    e->tid = tid;
    e->uid = (u32)uid_gid;
    e->gid = uid_gid >> 32;
    e->ret = args->ret;
    /* A path in a page not yet faulted in cannot be read at sys_enter; the kernel has
     * touched it by now, so one more try here. */
    if (spec->path_a && e->len_a == 0)
        e->len_a = read_path(e->str_a, arg_at(e, spec->path_a));
    if (spec->path_b && e->len_b == 0)
        e->len_b = read_path(e->str_b, arg_at(e, spec->path_b));
    read_sock_at(e, spec, 1);
    /* Most records carry at most one path: send only the part in use. */
    u64 size = SIZE_FULL;
    if (!e->len_b && !e->len_argv && !e->len_sock)
        size = e->len_a ? SIZE_STR_A : SIZE_HEADER;
    if (events.ringbuf_output(e, size, 0) != 0)
        count(CNT_RING_FULL);
    else
        count(CNT_EMITTED);
    inflight.delete(&tid);
    return 0;
}

/* A record without syscall payload, for the sched tracepoints. */
static __always_inline int emit_task(u16 kind, u64 a0, u64 a1, u64 a2, s32 nr)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (is_self(tgid))
        return 0;
    struct falconer_event *e = events.ringbuf_reserve(SIZE_HEADER);
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
    e->nr = nr;
    e->kind = kind;
    e->argc = 0;
    e->ret = 0;
    e->args[0] = a0;
    e->args[1] = a1;
    e->args[2] = a2;
    e->args[3] = e->args[4] = e->args[5] = 0;
    e->len_a = e->len_b = e->len_argv = e->len_sock = 0;
    events.ringbuf_submit(e, 0);   /* header only: SIZE_HEADER bytes */
    count(CNT_EMITTED);
    return 0;
}

/* Before the child runs: args = (clone flags, child tid, syscall nr of the clone). */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct falconer_event *stash = inflight.lookup(&tid);
    u64 flags = 0;
    s32 nr = -1;
    if (stash) {
        nr = stash->nr;
        flags = stash->args[nr == FALCONER_NR_CLONE3 ? 2 : 0];  /* spec.deref_to for clone3 */
        if (nr == FALCONER_NR_FORK)
            flags = 0;
        else if (nr == FALCONER_NR_VFORK)
            flags = 0x4100;   /* CLONE_VFORK | CLONE_VM */
    }
    return emit_task(KIND_FORK, flags, (u32)args->child_pid, nr, nr);
}

/* A thread that is not the leader execs: its stash moves to the leader's tid. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 old_tid = args->old_pid, new_tid = args->pid;
    if (old_tid != new_tid) {
        struct falconer_event *stash = inflight.lookup(&old_tid);
        if (stash) {
            /* the execve's record lives in this stash: a failed move loses it */
            if (inflight.update(&new_tid, stash) != 0)
                count(CNT_STASH_FULL);
            inflight.delete(&old_tid);
        }
    }
    return emit_task(KIND_EXEC, old_tid, new_tid, 0, -1);
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight.delete(&tid);
    return emit_task(KIND_EXIT, 0, 0, 0, -1);
}
