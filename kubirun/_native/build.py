"""cffi builder (API mode) for ``kubirun._native._kernel``.

Only the system calls Python's standard library does not offer are bound
here.  Those newer than glibc 2.31 go through ``syscall(2)`` by number so the
module builds on every distribution we support.
"""
from cffi import FFI

CDEF = """
int unshare(int flags);
int setns(int fd, int nstype);
int mount(const char *source, const char *target, const char *fstype,
          unsigned long flags, const void *data);
int umount2(const char *target, int flags);
int sethostname(const char *name, size_t len);
int setdomainname(const char *name, size_t len);
int kubi_setrlimit(int resource, uint64_t soft, uint64_t hard);

int kubi_pivot_root(const char *new_root, const char *put_old);
int kubi_close_range(unsigned int first, unsigned int last, unsigned int flags);
int kubi_pidfd_open(int pid, unsigned int flags);
int kubi_pidfd_send_signal(int pidfd, int sig, unsigned int flags);
int kubi_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode,
                 uint64_t resolve);
int kubi_prctl(int option, unsigned long a2, unsigned long a3,
               unsigned long a4, unsigned long a5);
int kubi_link_up(const char *ifname);
int kubi_capset(uint32_t eff0, uint32_t eff1, uint32_t perm0, uint32_t perm1,
                uint32_t inh0, uint32_t inh1);
"""

SOURCE = r"""
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Numbers shared by every architecture since Linux 5.1's unified table. */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct kubi_open_how { uint64_t flags; uint64_t mode; uint64_t resolve; };

static int kubi_pivot_root(const char *new_root, const char *put_old)
{ return (int)syscall(SYS_pivot_root, new_root, put_old); }

static int kubi_close_range(unsigned int first, unsigned int last, unsigned int flags)
{ return (int)syscall(SYS_close_range, first, last, flags); }

static int kubi_pidfd_open(int pid, unsigned int flags)
{ return (int)syscall(SYS_pidfd_open, pid, flags); }

static int kubi_pidfd_send_signal(int pidfd, int sig, unsigned int flags)
{ return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags); }

static int kubi_openat2(int dirfd, const char *path, uint64_t flags,
                        uint64_t mode, uint64_t resolve)
{
    struct kubi_open_how how = { flags, mode, resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

static int kubi_prctl(int option, unsigned long a2, unsigned long a3,
                      unsigned long a4, unsigned long a5)
{ return prctl(option, a2, a3, a4, a5); }

/* capset(2) with version 3 (64 capability bits in two 32-bit words);
   glibc has no wrapper and libcap would be one more dependency. */
struct kubi_cap_header { uint32_t version; int pid; };
struct kubi_cap_data { uint32_t effective, permitted, inheritable; };

static int kubi_capset(uint32_t eff0, uint32_t eff1, uint32_t perm0, uint32_t perm1,
                       uint32_t inh0, uint32_t inh1)
{
    struct kubi_cap_header header = { 0x20080522, 0 };
    struct kubi_cap_data data[2] = { { eff0, perm0, inh0 }, { eff1, perm1, inh1 } };
    return (int)syscall(SYS_capset, &header, data);
}

/* setrlimit without Python's `resource` module (0.8 ms to import). */
static int kubi_setrlimit(int resource, uint64_t soft, uint64_t hard)
{
    struct rlimit limit = { (rlim_t)soft, (rlim_t)hard };
    return setrlimit(resource, &limit);
}

/* Bring a link up with two ioctls: importing pyroute2 for the loopback
   device alone would cost ~190 ms of start-up. */
static int kubi_link_up(const char *ifname)
{
    struct ifreq ifr;
    int fd, rc, saved;
    if (strlen(ifname) >= IFNAMSIZ) { errno = EINVAL; return -1; }
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("kubirun._native._kernel", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
