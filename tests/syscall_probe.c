/* syscall_probe NR [ARG...]: make system call number NR with up to six
 * integer arguments (the rest 0) and print "ok RESULT" or "errno N".
 * Static, so it runs in any root; the tests see what the kernel or a
 * seccomp filter answers, not what a C library makes of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long args[6] = {0, 0, 0, 0, 0, 0};
    if (argc < 2 || argc > 8) {
        fprintf(stderr, "usage: syscall_probe NR [ARG...] (at most six)\n");
        return 2;
    }
    for (int i = 2; i < argc; i++)
        args[i - 2] = strtol(argv[i], NULL, 0);
    long result = syscall(strtol(argv[1], NULL, 0), args[0], args[1], args[2], args[3],
                          args[4], args[5]);
    if (result < 0)
        printf("errno %d\n", errno);
    else
        printf("ok %ld\n", result);
    return 0;
}
