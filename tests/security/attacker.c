/* The attacker of tests/security/test_exec_process.py, run inside a
 * container: it watches for processes named like the runtime (ARGV[2...],
 * their /proc/PID/comm: "kubirun" for kubirun's own, mid-setup: an `exec`
 * process, or an init joining our PID namespace) and tries on each what
 * CVE-2019-5736 and CVE-2016-9962 did to runc:
 *
 *   - open /proc/PID/exe (O_PATH, then for writing: ETXTBSY would still
 *     mean the access check was passed, so it counts as reached);
 *   - open /proc/PID/mem;
 *   - ptrace it (PTRACE_SEIZE).
 *
 * A success counts when the process still has that name afterwards (so it
 * had not become the container's program, which execve makes reachable,
 * in between).  Each one is a line on stdout ("PID how name"); the test
 * expects none, and some "saw PID name" lines (targets were there).  It runs for ARGV[1] seconds.  Built static by the test
 * (the container has no libc).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char **names;

/* The process's name, or "" when it is gone. */
static void comm_of(long pid, char *comm, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	comm[0] = 0;
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, comm, size - 1);
	close(fd);
	if (n <= 0) {
		comm[0] = 0;
		return;
	}
	comm[n] = 0;
	comm[strcspn(comm, "\n")] = 0;
}

static int is_target(const char *comm)
{
	for (char **name = names; *name; name++)
		if (strcmp(comm, *name) == 0)
			return 1;
	return 0;
}

static void report(long pid, const char *how, const char *before)
{
	char after[64];

	comm_of(pid, after, sizeof after);
	if (strcmp(after, before) != 0)
		return; /* it became something else (or is gone): no proof */
	printf("%ld %s %s\n", pid, how, before);
	fflush(stdout);
}

/* "saw PID name", once per process: proof the attack had targets. */
static void saw(long pid, const char *comm)
{
	static long seen[4096];
	static size_t count;

	for (size_t i = 0; i < count; i++)
		if (seen[i] == pid)
			return;
	if (count < sizeof seen / sizeof seen[0])
		seen[count++] = pid;
	printf("saw %ld %s\n", pid, comm);
	fflush(stdout);
}

static void attack(long pid)
{
	char path[64], comm[64];
	int fd;

	comm_of(pid, comm, sizeof comm);
	if (!is_target(comm))
		return;
	saw(pid, comm);
	snprintf(path, sizeof path, "/proc/%ld/exe", pid);
	fd = open(path, O_PATH | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		report(pid, "open-exe-path", comm);
	}
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0 || errno == ETXTBSY) {
		if (fd >= 0)
			close(fd);
		report(pid, "open-exe-write", comm);
	}
	snprintf(path, sizeof path, "/proc/%ld/mem", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		report(pid, "open-mem", comm);
	}
	/* PTRACE_SEIZE: the access check of PTRACE_ATTACH without its SIGSTOP;
	 * then stop it once, to be allowed to detach. */
	if (ptrace(PTRACE_SEIZE, (pid_t)pid, 0, 0) == 0) {
		if (ptrace(PTRACE_INTERRUPT, (pid_t)pid, 0, 0) == 0)
			waitpid((pid_t)pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, (pid_t)pid, 0, 0);
		report(pid, "ptrace-seize", comm);
	}
}

int main(int argc, char **argv)
{
	time_t end;
	long self = (long)getpid();

	if (argc < 3) {
		fprintf(stderr, "usage: attacker SECONDS NAME...\n");
		return 2;
	}
	end = time(NULL) + atol(argv[1]);
	names = argv + 2;

	printf("ready\n");
	fflush(stdout);
	while (time(NULL) < end) {
		DIR *proc = opendir("/proc");
		struct dirent *entry;

		if (!proc)
			return 2;
		while ((entry = readdir(proc)) != NULL) {
			char *rest;
			long pid = strtol(entry->d_name, &rest, 10);

			if (*rest || pid <= 1 || pid == self)
				continue;
			attack(pid);
		}
		closedir(proc);
	}
	return 0;
}
