/* Changes its own capability sets and opens a file after each change, then exits at
 * once: each open must carry the sets in force at that moment.
 * Usage: capset PATH_A PATH_B PATH_C (run as root)
 *   A: effective = permitted = {CAP_KILL, CAP_SYS_MODULE}, inheritable = {CAP_KILL}
 *   B: CAP_SYS_MODULE dropped from effective (still permitted)
 *   C: CAP_SYS_MODULE raised in effective again */
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static int set_caps(unsigned eff, unsigned prm, unsigned inh)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{eff, prm, inh}, {0, 0, 0}};
    return syscall(SYS_capset, &hdr, data);
}

static int step(const char *path, unsigned eff, unsigned prm, unsigned inh)
{
    if (set_caps(eff, prm, inh) != 0) {
        perror("capset");
        return 1;
    }
    close(open(path, O_RDONLY));
    return 0;
}

int main(int argc, char **argv)
{
    unsigned kill = 1u << CAP_KILL, module = 1u << CAP_SYS_MODULE;
    if (argc != 4)
        return 2;
    return step(argv[1], kill | module, kill | module, kill)
        || step(argv[2], kill, kill | module, kill)
        || step(argv[3], kill | module, kill | module, kill);
}
