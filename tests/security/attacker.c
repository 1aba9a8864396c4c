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
 *
 * `attacker exe SECONDS DEV INO` is CVE-2019-5736 itself: it opens
 * /proc/PID/exe (O_PATH) of every process it sees and keeps the fd, and
 * reports "host-exe PID" for one that is the host's file DEV:INO (the
 * runtime's interpreter), "writable DEV:INO" when that file opens for
 * writing through /proc/self/fd (or ETXTBSY says the check passed), at
 * once and again after the process has gone, and "memfd-written" when a
 * memfd exe takes a write.
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

#include <sys/stat.h>

static void try_write(int fd, unsigned long dev, unsigned long ino, const char *when)
{
	char path[64], link[256];
	struct stat st;
	ssize_t n;
	int w;

	if (fstat(fd, &st) < 0)
		return;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	w = open(path, O_WRONLY | O_CLOEXEC);
	if ((unsigned long)st.st_dev == dev && (unsigned long)st.st_ino == ino &&
	    (w >= 0 || errno == ETXTBSY))
		printf("writable %lu:%lu %s\n", dev, ino, when);
	if (w >= 0 && strncmp(link, "/memfd:", 7) == 0 && write(w, "x", 1) == 1)
		printf("memfd-written %s %s\n", link, when);
	if (w >= 0)
		close(w);
	fflush(stdout);
}

static int exe_mode(int seconds, unsigned long dev, unsigned long ino)
{
	static int kept[4096];
	static long seen[65536];
	size_t nkept = 0, nseen = 0;
	long self = (long)getpid();
	time_t end = time(NULL) + seconds;

	printf("ready\n");
	fflush(stdout);
	while (time(NULL) < end) {
		DIR *proc = opendir("/proc");
		struct dirent *entry;

		if (!proc)
			return 2;
		while ((entry = readdir(proc)) != NULL) {
			char *rest, path[64];
			long pid = strtol(entry->d_name, &rest, 10);
			struct stat st;
			size_t i;
			int fd;

			if (*rest || pid <= 1 || pid == self)
				continue;
			for (i = 0; i < nseen && seen[i] != pid; i++)
				;
			if (i < nseen)
				continue;
			snprintf(path, sizeof path, "/proc/%ld/exe", pid);
			fd = open(path, O_PATH | O_CLOEXEC);
			if (fd < 0)
				continue;
			if (nseen < sizeof seen / sizeof seen[0])
				seen[nseen++] = pid;
			if (fstat(fd, &st) == 0 && (unsigned long)st.st_dev == dev &&
			    (unsigned long)st.st_ino == ino)
				printf("host-exe %ld\n", pid);
			printf("saw %ld\n", pid);
			fflush(stdout);
			try_write(fd, dev, ino, "running");
			if (nkept < sizeof kept / sizeof kept[0])
				kept[nkept++] = fd;
			else
				close(fd);
		}
		closedir(proc);
	}
	for (size_t i = 0; i < nkept; i++)
		try_write(kept[i], dev, ino, "after-exit");
	printf("done\n");
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	time_t end;
	long self = (long)getpid();

	if (argc == 5 && strcmp(argv[1], "exe") == 0)
		return exe_mode(atoi(argv[2]), strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
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
