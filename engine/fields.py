"""The field registry: every field a condition or output may name, with its type.

The compiler needs a field's type to parse the right-hand value (`fd.num >= 0` is a
number, `fd.net = 10.0.0.0/8` a network), to reject operators that make no sense for
it (`contains` on a number), and to know whether it takes an argument
(`proc.aname[2]`, `evt.arg.flags`). Names, types and argument rules follow libsinsp's
syscall field classes and the container/k8s fields Falco's plugins provide, so rules
written for Falco resolve the same way.

Types: string, bytes, number, port (a number, or a service name on the right-hand
side), bool, ipaddr, ipnet, any (raw event arguments).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    """How a field's values compare (the registry's type column; the wire value is the
    lower-case name): libsinsp's PT_CHARBUF is `string`, its integer types `number`,
    PT_PORT `port`, PT_BOOL `bool`, PT_IPADDR/PT_IPNET `ipaddr`/`ipnet`, PT_BYTEBUF
    `bytes`; `any` takes a string or a number."""

    STRING = "string"
    NUMBER = "number"
    PORT = "port"
    BOOL = "bool"
    IPADDR = "ipaddr"
    IPNET = "ipnet"
    BYTES = "bytes"
    ANY = "any"


@dataclass(frozen=True)
class FieldInfo:
    """What the engine knows about one field."""

    name: str
    type: FieldType
    arg: str  # "none" | "allowed" | "required"
    is_list: bool
    deprecated: bool
    description: str
    filter_only: bool = False  # usable in conditions, not in outputs
    print_only: bool = False  # usable in outputs, not in conditions
    no_rhs: bool = False  # cannot be read by `val()` on a check's right side
    no_transformer: bool = False  # cannot be wrapped in a transformer

    @property
    def numeric(self) -> bool:
        """Whether values compare as numbers."""
        return self.type in (FieldType.NUMBER, FieldType.PORT)


#: Fields named `<prefix>.<arg>` (the argument written after a dot, e.g. evt.arg.flags).
DOTTED_ARG_FIELDS: tuple[str, ...] = ("evt.arg", "evt.rawarg", "evt.type.is")

# name type arg flags description -- one field a line.
_TABLE = """
evt.latency number none deprecated Latency
evt.latency.s number none deprecated Latency (s)
evt.latency.ns number none deprecated Latency (ns)
evt.latency.human string none deprecated Human-Readable Latency
evt.deltatime number none - Delta
evt.deltatime.s number none - Delta (s)
evt.deltatime.ns number none - Delta (ns)
evt.outputtime string none print_only Output Time
evt.dir string none deprecated Direction
evt.type string none - Type
evt.type.is number required - Type Is
syscall.type string none - Syscall Type
evt.category string none - Category
evt.cpu number none - CPU Number
evt.args string none - Arguments
evt.arg string required - Argument
evt.rawarg any required no_rhs,no_transformer Raw Argument
evt.info string none - Information
evt.buffer bytes none - Buffer
evt.buflen number none - Buffer Length
evt.res string none - Return Value
evt.rawres number none - Raw Return Value
evt.failed bool none - Failed
evt.is_io bool none - Is I/O
evt.is_io_read bool none - Is Read
evt.is_io_write bool none - Is Write
evt.io_dir string none - I/O Direction
evt.is_wait bool none - Is Wait
evt.wait_latency number none deprecated Wait Latency
evt.is_syslog bool none - Is Syslog
evt.count number none - Count
evt.count.error number none - Error Count
evt.count.error.file number none - File Error Count
evt.count.error.net number none - Network Error Count
evt.count.error.memory number none - Memory Error Count
evt.count.error.other number none - Other Error Count
evt.count.exit number none - Exit Count
evt.abspath string required - Absolute Path
evt.is_open_read bool none - Is Opened For Reading
evt.is_open_write bool none - Is Opened For Writing
evt.is_open_exec bool none - Is Created With Execute Permissions
evt.is_open_create bool none - Is Created
proc.exe string none - First Argument
proc.pexe string none - Parent First Argument
proc.aexe string allowed no_rhs,no_transformer Ancestor First Argument
proc.exepath string none - Process Executable Path
proc.pexepath string none - Parent Process Executable Path
proc.aexepath string allowed no_rhs,no_transformer Ancestor Executable Path
proc.name string none - Name
proc.pname string none - Parent Name
proc.aname string allowed no_rhs,no_transformer Ancestor Name
proc.args string allowed - Arguments
proc.aargs string allowed - Ancestor Arguments
proc.cmdline string none - Command Line
proc.pcmdline string none - Parent Command Line
proc.acmdline string allowed no_rhs,no_transformer Ancestor Command Line
proc.cmdnargs number none - Number of Command Line args
proc.cmdlenargs number none - Total Count of Characters in Command Line args
proc.exeline string none - Executable Command Line
proc.env string allowed - Environment
proc.aenv string allowed no_rhs,no_transformer Ancestor Environment
proc.cwd string none - Current Working Directory
proc.loginshellid number none - Login Shell ID
proc.tty number none - Process TTY
proc.pid number none - Process ID
proc.ppid number none - Parent Process ID
proc.apid number allowed no_rhs,no_transformer Ancestor Process ID
proc.vpid number none - Virtual Process ID
proc.pvpid number none - Parent Virtual Process ID
proc.sid number none - Process Session ID
proc.sname string none - Process Session Name
proc.sid.exe string none - Process Session First Argument
proc.sid.exepath string none - Process Session Executable Path
proc.vpgid number none - Process Virtual Group ID
proc.vpgid.name string none - Process Group Name
proc.vpgid.exe string none - Process Group First Argument
proc.vpgid.exepath string none - Process Group Executable Path
proc.pgid number none - Process Group ID
proc.pgid.name string none - Process Group Name
proc.pgid.exe string none - Process Group First Argument
proc.pgid.exepath string none - Process Group Executable Path
proc.duration number none - Process Duration
proc.ppid.duration number none - Parent Process Duration
proc.pid.ts number none - Process start ts
proc.ppid.ts number none - Parent Process start ts
proc.is_exe_writable bool none - Process Executable Is Writable
proc.is_exe_upper_layer bool none - Process Executable Is In Upper Layer
proc.is_exe_lower_layer bool none - Process Executable Is In Lower Layer
proc.is_exe_from_memfd bool none - Process Executable Is Stored In Memfd
proc.is_sid_leader bool none - Process Is Process Session Leader
proc.is_vpgid_leader bool none - Process Is Virtual Process Group Leader
proc.is_pgid_leader bool none - Process Is Process Group Leader
proc.exe_ino number none - Inode number of executable file on disk
proc.exe_ino.ctime number none - Last status change time (ctime) of executable file
proc.exe_ino.mtime number none - Last modification time (mtime) of executable file
proc.exe_ino.ctime_duration_proc_start number none - Number of nanoseconds between ctime exe file and proc clone ts
proc.exe_ino.ctime_duration_pidns_start number none - Number of nanoseconds between pidns start ts and ctime exe file
proc.pidns_init_start_ts number none - Start ts of pid namespace
thread.cap_permitted string none - Permitted capabilities
thread.cap_inheritable string none - Inheritable capabilities
thread.cap_effective string none - Effective capabilities
proc.fdopencount number none - FD Count
proc.fdlimit number none - FD Limit
proc.fdusage number none - FD Usage
proc.vmsize number none - VM Size
proc.vmrss number none - VM RSS
proc.vmswap number none - VM Swap
thread.pfmajor number none - Major Page Faults
thread.pfminor number none - Minor Page Faults
thread.tid number none - Thread ID
thread.ismain bool none - Main Thread
thread.vtid number none - Virtual Thread ID
thread.exectime number none - Scheduled Thread CPU Time
thread.totexectime number none - Current Thread CPU Time
thread.cgroups string none - Thread Cgroups
thread.cgroup string required - Thread Cgroup
proc.nthreads number none - Threads
proc.nchilds number none - Children
thread.cpu number none - Thread CPU
thread.cpu.user number none - Thread User CPU
thread.cpu.system number none - Thread System CPU
thread.vmsize number none - Thread VM Size (kb)
thread.vmrss number none - Thread VM RSS (kb)
proc.stdin.type string none - Standard Input fd type
proc.stdout.type string none - Standard Output fd type
proc.stderr.type string none - Standard Error fd type
proc.stdin.name string none - Standard Input fd name
proc.stdout.name string none - Standard Output fd name
proc.stderr.name string none - Standard Error fd name
fd.num number none - FD Number
fd.type string none - FD Type
fd.typechar string none - FD Type Char
fd.name string none - FD Name
fd.directory string none - FD Directory
fd.filename string none - FD Filename
fd.ip ipaddr none filter_only,no_rhs,no_transformer FD IP Address
fd.cip ipaddr none - FD Client Address
fd.sip ipaddr none - FD Server Address
fd.lip ipaddr none - FD Local Address
fd.rip ipaddr none - FD Remote Address
fd.port port none filter_only,no_rhs,no_transformer FD Port
fd.cport port none - FD Client Port
fd.sport port none - FD Server Port
fd.lport port none - FD Local Port
fd.rport port none - FD Remote Port
fd.l4proto string none - FD IP Protocol
fd.sockfamily string none - FD Socket Family
fd.is_server bool none - FD Server
fd.uid string none - FD ID
fd.containername string none - FD Container Name
fd.containerdirectory string none - FD Container Directory
fd.proto port none filter_only,no_rhs,no_transformer FD Protocol
fd.cproto string none - FD Client Protocol
fd.sproto string none - FD Server Protocol
fd.lproto string none - FD Local Protocol
fd.rproto string none - FD Remote Protocol
fd.net ipnet none filter_only,no_rhs,no_transformer FD IP Network
fd.cnet ipnet none filter_only,no_rhs,no_transformer FD Client Network
fd.snet ipnet none filter_only,no_rhs,no_transformer FD Server Network
fd.lnet ipnet none filter_only,no_rhs,no_transformer FD Local Network
fd.rnet ipnet none filter_only,no_rhs,no_transformer FD Remote Network
fd.connected bool none - FD Connected
fd.name_changed bool none - FD Name Changed
fd.cip.name string none no_rhs,no_transformer FD Client Domain Name
fd.sip.name string none no_rhs,no_transformer FD Server Domain Name
fd.lip.name string none no_rhs,no_transformer FD Local Domain Name
fd.rip.name string none no_rhs,no_transformer FD Remote Domain Name
fd.dev number none - FD Device
fd.dev.major number none - FD Major Device
fd.dev.minor number none - FD Minor Device
fd.ino number none - FD Inode Number
fd.nameraw string none - FD Name Raw
fd.types string allowed list,no_rhs FD Type
fd.is_upper_layer bool none - FD Upper Layer
fd.is_lower_layer bool none - FD Lower Layer
user.uid number none - User ID
user.name string none - User Name
user.homedir string none - Home Directory
user.shell string none - Shell
user.loginuid number none - Login User ID
user.loginname string none - Login User Name
group.gid number none - Group ID
group.name string none - Group Name
fs.path.name string none - Path for Filesystem-related operation
fs.path.nameraw string none - Raw path for Filesystem-related operation
fs.path.source string none - Source path for Filesystem-related operation
fs.path.sourceraw string none - Source path for Filesystem-related operation
fs.path.target string none - Target path for Filesystem-related operation
fs.path.targetraw string none - Target path for Filesystem-related operation
fdlist.nums string none - FD Numbers
fdlist.names string none - FD Names
fdlist.cips string none - FD Client Addresses
fdlist.sips string none - FD Source Addresses
fdlist.cports string none - FD Client Ports
fdlist.sports string none - FD Source Ports
evt.num number none - Event Number
evt.time string none - Time
evt.time.s string none - Time (s)
evt.time.iso8601 string none - ISO 8601 Time
evt.datetime string none - Datetime
evt.datetime.s string none - Datetime (s)
evt.rawtime number none - Absolute Time
evt.rawtime.s number none - Absolute Time (s)
evt.rawtime.ns number none - Absolute Time (ns)
evt.reltime number none - Relative Time
evt.reltime.s number none - Relative Time (s)
evt.reltime.ns number none - Relative Time (ns)
evt.pluginname string none - Plugin Name
evt.plugininfo string none - Plugin Info
evt.source string none - Event Source
evt.is_async bool none - Async Event
evt.asynctype string none - Async Event Type
evt.hostname string none - Hostname
container.id string none - Container ID
container.full_id string none - Container Full ID
container.name string none - Container Name
container.image string none - Image Name
container.image.id string none - Image ID
container.type string none - Container Type
container.privileged bool none - Privileged
container.mounts string none - Mounts
container.mount string required - Mount
container.mount.source string required - Mount Source
container.mount.dest string required - Mount Destination
container.mount.mode string required - Mount Mode
container.mount.rdwr string required - Mount Read/Write
container.mount.propagation string required - Mount Propagation
container.image.repository string none - Repository
container.image.tag string none - Image Tag
container.image.digest string none - Registry Digest
container.healthcheck string none - Health Check
container.liveness_probe string none - Liveness
container.readiness_probe string none - Readiness
container.start_ts number none - Container Start
container.duration number none - Container Duration
container.ip string none - Container IP
container.cni.json string none - Container CNI Result
container.host_pid bool none - Host PID Namespace
container.host_network bool none - Host Network Namespace
container.host_ipc bool none - Host IPC Namespace
container.label string required - Container Label
container.labels string none - Container Labels
k8s.pod.name string none - Pod Name
k8s.pod.id string none - Legacy Pod UID
k8s.pod.uid string none - Pod UID
k8s.pod.label string required - Pod Label
k8s.pod.labels string none - Pod Labels
k8s.pod.ip string none - Pod IP
k8s.pod.cni.json string none - Pod CNI Result
k8s.pod.sandbox_id string none - Pod Sandbox ID
k8s.pod.full_sandbox_id string none - Pod Full Sandbox ID
k8s.ns.name string none - Namespace Name
k8s.ns.id string none - Namespace UID
k8s.ns.uid string none - Namespace UID
k8s.ns.label string required - Namespace Label
k8s.ns.labels string none - Namespace Labels
k8s.rc.name string none - Replication Controller Name
k8s.rs.name string none - Replica Set Name
k8s.svc.name string none - Service Name
k8s.deployment.name string none - Deployment Name
k8s.deployment.uid string none - Deployment UID
k8s.statefulset.name string none - StatefulSet Name
k8s.daemonset.name string none - DaemonSet Name
k8smeta.pod.name string none - Pod Name
k8smeta.pod.uid string none - Pod UID
k8smeta.pod.label string required - Pod Label
k8smeta.pod.labels string none list Pod Labels
k8smeta.pod.ip string none - Pod IP
k8smeta.ns.name string none - Namespace Name
k8smeta.deployment.name string none - Deployment Name
"""


def _parse_table(table: str) -> dict[str, FieldInfo]:
    """The registry from `_TABLE` (flags are comma-separated; `-` means none)."""
    out: dict[str, FieldInfo] = {}
    for line in table.strip().splitlines():
        name, ftype, arg, flags, description = line.split(" ", 4)
        flag_set = set(flags.split(","))
        out[name] = FieldInfo(name, FieldType(ftype), arg, "list" in flag_set, "deprecated" in flag_set,
                              description,
                              filter_only="filter_only" in flag_set,
                              print_only="print_only" in flag_set,
                              no_rhs="no_rhs" in flag_set,
                              no_transformer="no_transformer" in flag_set)
    return out


FIELDS: dict[str, FieldInfo] = _parse_table(_TABLE)


class UnknownField(Exception):
    """A field name the registry does not know, or an argument misuse."""


def resolve(name: str, arg: str | None) -> FieldInfo:
    """The field a condition or output token names; raises UnknownField.

    `evt.arg.flags` resolves to `evt.arg` with argument `flags`.
    """
    info = FIELDS.get(name)
    if info is None:
        for prefix in DOTTED_ARG_FIELDS:
            if name.startswith(prefix + ".") and arg is None:
                return FIELDS[prefix]
        raise UnknownField(f"filter_check called with nonexistent field {name}")
    if arg is None and info.arg == "required":
        raise UnknownField(f"filter {name} requires an argument")
    if arg is not None and info.arg == "none":
        raise UnknownField(f"filter {name} does not support arguments")
    return info
