"""Every constant the kernel side and user space share, defined once.

probe.bpf.c defines none of these: `cflags()` hands each to clang as a -D flag, and
tests/sensor/test_kernelabi.py checks that the C file uses each name and defines none,
so the two sides cannot disagree. Sizes are bytes.
"""

from __future__ import annotations

# Record kinds (falconer_event.kind).
KIND_SYSCALL = 0
KIND_EXEC = 1        # sched_process_exec: args = (old tid, tid, sid | pgid << 32, tty_nr,
                     #   vpid | vpgid << 32): the process group and session as of exec;
                     #   data: struct falconer_exec_data (exe inode, cgroup names);
                     #   flags: RF_EXE_UPPER_LAYER / RF_EXE_LOWER_LAYER
KIND_FORK = 2        # sched_process_fork: args = (clone flags, child tid, child tgid, real parent tgid)
KIND_EXIT = 3        # sched_process_exit

# Record flags (falconer_event.flags).
RF_COMPAT = 1          # made through the 32-bit (ia32) gate
RF_TRUNCATED = 2       # a string or block was cut at its bound
RF_ARGV_FROM_MM = 4    # argv/env read from the new image (successful exec): split on NULs
RF_EXE_UPPER_LAYER = 8   # KIND_EXEC: the executable is on an overlayfs, in its upper layer
RF_EXE_LOWER_LAYER = 16  # KIND_EXEC: the executable is on an overlayfs, only in a lower layer

# Per-CPU counter slots.
CNT_RING_FULL = 0    # ring buffer full: record lost
CNT_EMITTED = 1      # records handed to the ring buffer
CNT_FILTERED = 2     # records the rule-derived filter kept in the kernel (not a loss)
CNT_MAX = 3

# falconer_spec.forward
FORWARD_NO = 0
FORWARD_EMIT = 1
FORWARD_CLOSE_FILTER = 2   # close: emit unless the descriptor's open was filtered out

# Filter group ids (falconer_spec.filter): this bit marks a group's reversed entries.
FILTER_REVERSED = 0x40

# Where a syscall's socket address is (falconer_spec.sock_when).
SOCK_ENTER_LEN_VALUE = 1   # connect, sendto, bind: addr + length by value
SOCK_EXIT_LEN_PTR = 2      # accept, accept4, recvfrom: filled in by the kernel
SOCK_ENTER_MSGHDR = 3      # sendmsg: msghdr->msg_name
SOCK_EXIT_MSGHDR = 4       # recvmsg: msghdr->msg_name after the call

# Sizes. Paths are kept whole up to PATH_MAX as Falco keeps them.
STR_LEN = 4096             # one path, with its NUL (PATH_MAX)
ARGV_LEN = 4096            # argv strings of one exec
ENV_LEN = 4096             # environment strings of one exec
MAX_ARGS = 64              # argv entries read from a failed exec's array
SOCK_LEN = 128             # sizeof(struct sockaddr_storage)
DATA_HALF = 16384          # record data area is twice this (power of two, > all pieces)
KEY_PATH = 255             # path bytes in a filter key (LPM trie data is at most 256)
MAX_PATHS = 65536          # filter entries (exact paths and prefixes, all groups)
MAX_PROCS = 16384          # processes with descriptors whose open was filtered out (LRU)
FD_BITS = 1024             # descriptors per process the close filter tracks (a power of two)
MAX_SYSCALLS = 512         # syscall numbers covered by the spec/compat maps
CGROUP_LEVELS = 4          # cgroup path components read at exec (leaf, parent, ...)
CGROUP_NAME = 128          # bytes of one component, with its NUL (longer ones are cut)
CGROUP_HIERARCHIES = 2     # read at exec: the memory (else pids) controller's, cgroup v2's
#: Each CPU wakes the ring buffer's reader once it has submitted 1/(WAKEUP_SHARE * CPUs)
#: of the ring since its last wake-up; records before that go with BPF_RB_NO_WAKEUP and
#: are read at the reader's next timed poll (sensor/runner.py POLL_MS), so at most
#: 1/WAKEUP_SHARE of the ring waits unannounced. Waking the reader for every record costs
#: an inter-processor interrupt each: measured on this VM, 23-32 us of program time per
#: fork/exec/exit record with the default adaptive notification.
WAKEUP_SHARE = 4

# Kernel facts (x86_64 uapi and arch headers).
CLONE_VM = 0x100
CLONE_FILES = 0x400
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
AF_INET = 2
AF_INET6 = 10
O_DIRECTORY = 0o200000
O_CLOEXEC = 0o2000000
TS_COMPAT = 0x0002         # thread_info.status bit of an ia32 syscall (asm/thread_info.h)
PIDTYPE_PGID = 2           # enum pid_type (include/linux/pid_types.h): signal->pids[]
PIDTYPE_SID = 3
MAX_PID_LEVEL = 31         # pid namespaces nest at most 32 deep (MAX_PID_NS_LEVEL)
OVERLAYFS_SUPER_MAGIC = 0x794C7630   # super_block.s_magic of overlayfs (uapi/linux/magic.h)

_UNPREFIXED = ("KIND_", "RF_", "CNT_", "FORWARD_", "SOCK_", "CLONE_", "FILTER_")
_PREFIXED = ("STR_LEN", "ARGV_LEN", "ENV_LEN", "MAX_ARGS", "SOCK_LEN", "DATA_HALF",
             "KEY_PATH", "MAX_PATHS", "MAX_PROCS", "FD_BITS", "MAX_SYSCALLS",
             "CGROUP_LEVELS", "CGROUP_NAME", "CGROUP_HIERARCHIES", "WAKEUP_SHARE", "O_DIRECTORY", "TS_COMPAT", "AF_INET", "AF_INET6",
             "PIDTYPE_PGID", "PIDTYPE_SID", "MAX_PID_LEVEL", "OVERLAYFS_SUPER_MAGIC")


def constants() -> dict[str, int]:
    """Every shared constant by its C name (FALCONER_ prefix for sizes and kernel facts)."""
    out: dict[str, int] = {}
    for name, value in globals().items():
        if name in _PREFIXED:
            out[f"FALCONER_{name}"] = value
        elif isinstance(value, int) and name.startswith(_UNPREFIXED):
            out[name] = value
    return out


def cflags() -> list[str]:
    """The -D flags that give probe.bpf.c every shared constant."""
    return [f"-D{name}={value}" for name, value in constants().items()]
