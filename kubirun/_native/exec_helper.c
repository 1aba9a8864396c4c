/* kubirun-exec: the last program kubirun's own processes execve before the
 * container's program (CVE-2019-5736).
 *
 * Until that execve, a container's init (or an `exec` process, or a hook
 * run inside the container) is the Python interpreter that set it up, so
 * /proc/self/exe is the host's Python binary.  A container program that is
 * `#!/proc/self/exe` (or /proc/self/exe itself) would make the kernel start
 * that very binary inside the container, dumpable, and any container process
 * could then open /proc/PID/exe for writing once it exits.  So kubirun never
 * execve()s the container's program from Python: it execs this helper from a
 * sealed memfd (kubirun._native.exec_helper_fd: a copy nobody can write), and
 * the helper execs the program.  Whatever the program's path leads to,
 * /proc/self/exe is then that sealed copy, never a host file.
 *
 *   argv[0]  "kubirun-exec" (anything else: refused, see below)
 *   argv[1]  fds to report an execve failure on, comma-separated, or "-":
 *            each gets "E<code>\0<message>" (kubirun.channel's format)
 *   argv[2]  "1": also say "kubirun: <message>" on stderr
 *   argv[3]  the program's path
 *   argv[4…] its argv
 *
 * The report fds are made close-on-exec here, so the program inherits none
 * and the runtime reads end-of-file once it runs, as before.  Exit codes as
 * shells use them: 127 not found, 126 anything else.
 *
 * With argv[0] "kubirun-init" (`kubirun run --init`), the same arguments
 * make it the container's PID 1 instead, as `docker run --init`: it forks,
 * the child execs the program as above, and PID 1 forwards the signals it
 * is sent (a PID namespace's init gets only those it handles or blocks:
 * it blocks them all and waits for them), reaps every orphan, and exits as
 * the program did (128+N for a death by signal N).  Signals the kernel
 * sends itself (a terminal's ^C goes to the whole foreground group, the
 * program included) are not sent twice.
 *
 * No libc on x86-64 and aarch64 (a few hundred bytes to copy per start);
 * elsewhere it is built against libc, statically.
 */
#define KUBI_ENOENT 2
#define KUBI_EPERM 1
#define KUBI_EACCES 13
#define KUBI_ENOEXEC 8
#define KUBI_F_SETFD 2
#define KUBI_FD_CLOEXEC 1

#define KUBI_SIG_SETMASK 2
#define KUBI_SIGCHLD 17
#define KUBI_WNOHANG 1
#define KUBI_SI_KERNEL 0x80

#if defined(__x86_64__) && defined(KUBI_NOLIBC)
#define SYS_write 1
#define SYS_close 3
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_fork 57
#define SYS_execve 59
#define SYS_exit 60
#define SYS_wait4 61
#define SYS_kill 62
#define SYS_fcntl 72
#define SYS_rt_sigtimedwait 128
static long sys4(long n, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__aarch64__) && defined(KUBI_NOLIBC)
#define SYS_write 64
#define SYS_close 57
#define SYS_fcntl 25
#define SYS_kill 129
#define SYS_rt_sigaction 134
#define SYS_rt_sigprocmask 135
#define SYS_rt_sigtimedwait 137
#define SYS_clone 220
#define SYS_execve 221
#define SYS_wait4 260
#define SYS_exit 93
static long sys4(long n, long a, long b, long c, long d)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = 0;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
			 : "memory");
	return x0;
}
#else
#undef KUBI_NOLIBC
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
static long sys4(long n, long a, long b, long c, long d)
{
	long ret = syscall(n, a, b, c, d);
	return ret < 0 ? -errno : ret;
}
#endif
#define sys3(n, a, b, c) sys4((n), (a), (b), (c), 0)

static long fork_process(void)
{
#ifdef SYS_fork
	return sys3(SYS_fork, 0, 0, 0);
#else
	return sys3(SYS_clone, KUBI_SIGCHLD, 0, 0); /* fork(), where there is no fork */
#endif
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* Append s to buf (of 4096 bytes) at *at; truncates. */
static void append(char *buf, unsigned long *at, const char *s, unsigned long n)
{
	while (n-- && *at < 4095)
		buf[(*at)++] = *s++;
}

static void append_number(char *buf, unsigned long *at, unsigned long value)
{
	char digits[24];
	int n = 0;
	do
		digits[n++] = (char)('0' + value % 10);
	while ((value /= 10) && n < 24);
	while (n)
		append(buf, at, &digits[--n], 1);
}

static const char *reason(long err)
{
	switch (err) {
	case KUBI_ENOENT: return "no such file or directory";
	case KUBI_EACCES: case KUBI_EPERM: return "permission denied";
	case KUBI_ENOEXEC: return "exec format error";
	default: return 0;
	}
}

/* The next fd of a "3,5" list (advancing *fds), or -1 at its end ("-": none). */
static long next_fd(const char **fds)
{
	long fd = 0;
	const char *p = *fds;
	if (!*p || *p == '-')
		return -1;
	while (*p >= '0' && *p <= '9')
		fd = fd * 10 + (*p++ - '0');
	if (*p == ',')
		p++;
	*fds = p;
	return fd;
}

/* Report "exec: "ARG0": why" on each fd of the list, and on stderr if asked. */
static void report(const char *fds, int on_stderr, const char *arg0, long err, int code)
{
	char message[4096];
	unsigned long n = 0;
	const char *why = reason(err);

	append(message, &n, "exec: \"", 7);
	append(message, &n, arg0, length(arg0));
	append(message, &n, "\": ", 3);
	if (why) {
		append(message, &n, why, length(why));
	} else {
		append(message, &n, "errno ", 6);
		append_number(message, &n, (unsigned long)err);
	}
	if (on_stderr) {
		char line[4096 + 16];
		unsigned long m = 0;
		append(line, &m, "kubirun: ", 9);
		append(line, &m, message, n);
		append(line, &m, "\n", 1);
		sys3(SYS_write, 2, (long)line, (long)m);
	}
	for (long fd; (fd = next_fd(&fds)) >= 0;) {
		char framed[4096 + 16];
		unsigned long m = 0;
		append(framed, &m, "E", 1);
		append_number(framed, &m, (unsigned long)code);
		append(framed, &m, ":", 1); /* code:errno\0message (kubirun.channel) */
		append_number(framed, &m, (unsigned long)err);
		append(framed, &m, "", 1); /* "" is one NUL */
		append(framed, &m, message, n);
		sys3(SYS_write, fd, (long)framed, (long)m);
	}
}

static void close_on_exec(const char *fds)
{
	for (long fd; (fd = next_fd(&fds)) >= 0;)
		sys3(SYS_fcntl, fd, KUBI_F_SETFD, KUBI_FD_CLOEXEC);
}

static void close_all(const char *fds)
{
	for (long fd; (fd = next_fd(&fds)) >= 0;)
		sys3(SYS_close, fd, 0, 0);
}

/* Every signal at its default action, none blocked: an ignored disposition
 * survives execve, and the runtime's caller may have ignored any (a CI job,
 * a background job: SIGINT, SIGQUIT; even the C library's own 32 and 33,
 * which its sigaction() will not touch, hence the raw call). */
static void default_signals(void)
{
	long action[4] = {0, 0, 0, 0}; /* SIG_DFL, no flags, no restorer, empty mask */
	unsigned long none = 0;
	for (long sig = 1; sig <= 64; sig++)
		sys4(SYS_rt_sigaction, sig, (long)action, 0, 8); /* KILL, STOP: EINVAL, fine */
	sys4(SYS_rt_sigprocmask, KUBI_SIG_SETMASK, (long)&none, 0, 8);
}

/* Become the program; returns the exit code of a failed execve. */
static int exec_program(char **argv, char **envp)
{
	long err;
	int code;

	default_signals();
	close_on_exec(argv[1]);
	err = -sys3(SYS_execve, (long)argv[3], (long)(argv + 4), (long)envp);
	code = err == KUBI_ENOENT ? 127 : 126;
	report(argv[1], argv[2][0] == '1', argv[4], err, code);
	return code;
}

/* PID 1 for `run --init`: see the top of the file. */
static int init(char **argv, char **envp)
{
	unsigned long all = ~0UL, before = 0;
	long info[16]; /* siginfo_t: 128 bytes; si_signo, si_errno, si_code first */
	long child, pid;
	int status;

	sys4(SYS_rt_sigprocmask, KUBI_SIG_SETMASK, (long)&all, (long)&before, 8);
	child = fork_process();
	if (child == 0) {
		sys4(SYS_rt_sigprocmask, KUBI_SIG_SETMASK, (long)&before, 0, 8);
		return exec_program(argv, envp);
	}
	if (child < 0)
		return exec_program(argv, envp); /* cannot fork: be the program */
	close_all(argv[1]); /* the child's copies say whether its execve worked */
	for (;;) {
		long sig = sys4(SYS_rt_sigtimedwait, (long)&all, (long)info, 0, 8);
		if (sig == KUBI_SIGCHLD) {
			while ((pid = sys4(SYS_wait4, -1, (long)&status, KUBI_WNOHANG, 0)) > 0) {
				if (pid == child)
					return (status & 0x7f) ? 128 + (status & 0x7f) : (status >> 8) & 0xff;
			}
		} else if (sig > 0 && ((int *)info)[2] != KUBI_SI_KERNEL) {
			sys3(SYS_kill, child, sig, 0);
		}
	}
}

/* PID 1 of a pod sandbox: see the top of the file. */
static int pause_init(char **argv)
{
	unsigned long all = ~0UL;
	long info[16];
	int status;

	sys4(SYS_rt_sigprocmask, KUBI_SIG_SETMASK, (long)&all, 0, 8);
	close_all(argv[1]); /* no program: the runtime's end reads end-of-file now */
	for (;;) {
		long sig = sys4(SYS_rt_sigtimedwait, (long)&all, (long)info, 0, 8);
		if (sig == KUBI_SIGCHLD)
			while (sys4(SYS_wait4, -1, (long)&status, KUBI_WNOHANG, 0) > 0)
				;
		else if (sig == 15 || sig == 2) /* SIGTERM, SIGINT */
			return 0;
	}
}

static int helper(int argc, char **argv, char **envp)
{
	static const char refusal[] =
		"kubirun-exec: this is kubirun's exec helper, not a program to run\n";

	/* Reached any other way (`#!/proc/self/exe`, /proc/PID/exe): refuse. */
	if (argc >= 5 && same(argv[0], "kubirun-init"))
		return init(argv, envp);
	if (argc >= 5 && same(argv[0], "kubirun-pause"))
		return pause_init(argv);
	if (argc < 5 || !same(argv[0], "kubirun-exec")) {
		sys3(SYS_write, 2, (long)refusal, sizeof refusal - 1);
		return 126;
	}
	return exec_program(argv, envp);
}

#ifdef KUBI_NOLIBC
/* The kernel's initial stack: argc, argv[], NULL, envp[], NULL, auxv. */
__attribute__((used)) static void start_c(long *stack)
{
	int argc = (int)stack[0];
	char **argv = (char **)(stack + 1);
	char **envp = argv + argc + 1;
	sys3(SYS_exit, helper(argc, argv, envp), 0, 0);
	for (;;)
		;
}

#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n"
	"  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n  hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n"
	"  mov x29, #0\n  mov x0, sp\n  and sp, x0, #-16\n  bl start_c\n  brk #0\n");
#endif
#else
int main(int argc, char **argv, char **envp)
{
	return helper(argc, argv, envp);
}
#endif
