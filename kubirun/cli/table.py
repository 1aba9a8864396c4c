"""The command line, declared once as data.

Two parsers read this table: ``fastpath`` parses the everyday forms of the
hot commands without importing click (click alone costs ~25 ms to import
here, more than runc needs to run a whole container), and ``app`` builds
the click application for everything else: error messages, unusual
spellings.  ``helptext`` writes the help from it, in runc's layout: a
``help`` text's first paragraph is the command's one-line summary.  Whatever ``fastpath`` does not fully understand goes to
click, so the two can never disagree on a valid command line's meaning.
"""
from __future__ import annotations

# Plain classes, not dataclasses: importing dataclasses costs ~5 ms at
# every start (it imports inspect).


class Option:
    def __init__(self, names: tuple[str, ...], dest: str, help: str, kind: str = "flag",
                 metavar: str | None = None, default: object = None) -> None:
        self.names = names  # e.g. ("-e", "--env")
        self.dest = dest  # the handler's keyword
        self.help = help
        self.kind = kind  # "flag" | "value" | "multiple"
        self.metavar = metavar
        self.default = default


class Argument:
    def __init__(self, dest: str, required: bool = True, variadic: bool = False) -> None:
        self.dest = dest
        self.required = required
        self.variadic = variadic  # takes every remaining word, options included


class Command:
    def __init__(self, name: str, help: str, handler: str, options: tuple[Option, ...] = (),
                 arguments: tuple[Argument, ...] = (), epilog: str = "",
                 interspersed: bool = False) -> None:
        self.name = name
        # kubectl's habit (the node's commands): options may also follow the
        # arguments, up to "--"; runc's commands take them before.
        self.interspersed = interspersed
        self.help = help
        self.handler = handler  # "module:function", imported only when the command runs
        self.options = options
        self.arguments = arguments
        self.epilog = epilog


APP_HELP = """a low-level Linux container runtime

kubirun runs containers from OCI bundles, as runc does (create, start, state,
kill, delete, exec, ...), and from images: a root filesystem tar, a
docker-save archive or an OCI layout, unpacked once into its store.

Try `kubirun demo ps`, then `kubirun run rootfs/busybox.tar.gz -- ps aux`."""


def _id(required: bool = True) -> Argument:
    return Argument("container_id", required)


GLOBAL_OPTIONS = (
    Option(("--root",), "root", "State directory (default /run/kubirun as root,"
           " $XDG_RUNTIME_DIR/kubirun otherwise).", "value", "DIR"),
    Option(("--log",), "log", "Write kubirun's messages to FILE (default: stderr).", "value", "FILE"),
    Option(("--log-format",), "log_format", "Log format: text or json.", "value", "FORMAT", "text"),
    Option(("--debug",), "debug", "Also log debug messages."),
    Option(("--systemd-cgroup",), "systemd_cgroup",
           "Use systemd for cgroups (not supported: kubirun manages cgroupfs itself)."),
    Option(("--rootless",), "rootless", "true, false or auto (only auto/false are supported yet).",
           "value", "MODE", "auto"),
)

_BUNDLE = Option(("-b", "--bundle"), "bundle", "The bundle directory (default: the current one).",
                 "value", "DIR")
_PID_FILE = Option(("--pid-file",), "pid_file", "Write the container's PID to FILE.", "value", "FILE")
_CONSOLE_SOCKET = Option(("--console-socket",), "console_socket",
                         "Unix socket to send the pty master to (for terminal: true).",
                         "value", "PATH")
_PRESERVE_FDS = Option(("--preserve-fds",), "preserve_fds",
                       "Pass N more fds (3..3+N-1) to the container.", "value", "N", "0")
_EXPLAIN = Option(("--explain",), "explain",
                  "Narrate every step from fork to execve on stderr: the system call, why, and"
                  " where in kubirun's code.")
_CREATE_OPTIONS = (
    _BUNDLE, _PID_FILE, _CONSOLE_SOCKET,
    Option(("--no-pivot",), "no_pivot", "Use MS_MOVE and chroot instead of pivot_root."),
    Option(("--no-new-keyring",), "no_new_keyring",
           "Keep the caller's session keyring (kubirun never makes one)."),
    _PRESERVE_FDS,
    _EXPLAIN,
)
_FORMAT = Option(("-f", "--format"), "format", "Output format: table or json.", "value", "FORMAT",
                 "table")

CREATE = Command("create", "Create a container from an OCI bundle; it waits for `start`.",
                 "kubirun.cli.handlers:create", _CREATE_OPTIONS, (_id(),))
START = Command("start", "Run the user process of a created container.",
                "kubirun.cli.engine_calls:start", (), (_id(),))
STATE = Command("state", "Print a container's OCI state as JSON.",
                "kubirun.cli.engine_calls:state", (), (_id(),))
KILL = Command("kill", "Send SIGNAL (default TERM; a name or a number) to the container's init.",
               "kubirun.cli.engine_calls:kill",
               (Option(("-a", "--all"), "all", "Signal every process of the container."),),
               (_id(), Argument("signal", required=False)))
DELETE = Command("delete", "Delete a container and everything kubirun made for it.",
                 "kubirun.cli.engine_calls:delete",
                 (Option(("-f", "--force"), "force", "Kill it first if it still runs."),),
                 (_id(),))
EXEC = Command(
    "exec", "Run a process in a running container.", "kubirun.cli.handlers:exec_",
    (
        Option(("-p", "--process"), "process", "A process.json (runtime-spec process object).",
               "value", "FILE"),
        Option(("-t", "--tty"), "tty", "Give the process a terminal."),
        _CONSOLE_SOCKET,
        Option(("--cwd",), "cwd", "Working directory.", "value", "DIR"),
        Option(("-e", "--env"), "env", "Set KEY=VALUE.", "multiple", "KEY=VALUE", ()),
        Option(("-u", "--user"), "user", "UID[:GID].", "value", "UID[:GID]"),
        Option(("-g", "--additional-gids"), "additional_gids", "Supplementary group ids.",
               "multiple", "GID", ()),
        Option(("-c", "--cap"), "cap", "Add a capability.", "multiple", "CAP", ()),
        Option(("--no-new-privs",), "no_new_privs", "Set no_new_privs."),
        Option(("-d", "--detach"), "detach", "Do not wait for the process."),
        Option(("--ignore-paused",), "ignore_paused",
               "Exec into a paused container too (the process starts frozen)."),
        Option(("--cgroup",), "cgroup",
               "Run the process in an existing sub-cgroup of the container's:"
               " [CONTROLLER[,CONTROLLER...]:]PATH (repeatable with a controller).",
               "multiple", "[CONTROLLER:]PATH", ()),
        _PID_FILE,
        _PRESERVE_FDS,
        _EXPLAIN,
    ),
    (_id(), Argument("command", required=False, variadic=True)),
)
PS = Command("ps", "Show the container's processes (json: host PIDs).", "kubirun.cli.handlers:ps",
             (_FORMAT,), (_id(), Argument("ps_args", required=False, variadic=True)))
LIST = Command("list", "List containers.", "kubirun.cli.engine_calls:list_",
               (_FORMAT, Option(("-q", "--quiet"), "quiet", "Only ids.")))
PAUSE = Command("pause", "Freeze every process of a container.", "kubirun.cli.handlers:pause",
                (), (_id(),))
RESUME = Command("resume", "Thaw a paused container.", "kubirun.cli.handlers:resume", (), (_id(),))
EVENTS = Command(
    "events", "Stream a container's events (OOM kills, and stats with --stats) as JSON lines.",
    "kubirun.cli.handlers:events",
    (Option(("--stats",), "stats", "Print the stats once and exit."),
     Option(("--interval",), "interval", "Stats interval (e.g. 5s, 500ms).", "value", "TIME", "5s")),
    (_id(),),
)
UPDATE = Command(
    "update", "Change a running container's resource limits.", "kubirun.cli.handlers:update",
    (
        Option(("-r", "--resources"), "resources", "linux.resources JSON file ('-': stdin).",
               "value", "FILE"),
        Option(("--memory",), "memory", "Memory limit (bytes, or 512m, 1g).", "value", "SIZE"),
        Option(("--memory-reservation",), "memory_reservation", "Memory soft limit.", "value", "SIZE"),
        Option(("--memory-swap",), "memory_swap", "Memory plus swap limit.", "value", "SIZE"),
        Option(("--cpu-share", "--cpu-shares"), "cpu_shares", "CPU shares (relative weight).",
               "value", "N"),
        Option(("--cpu-quota",), "cpu_quota", "CPU CFS quota (us per period).", "value", "US"),
        Option(("--cpu-period",), "cpu_period", "CPU CFS period (us).", "value", "US"),
        Option(("--cpu-rt-runtime",), "cpu_rt_runtime", "Realtime runtime (us).", "value", "US"),
        Option(("--cpu-rt-period",), "cpu_rt_period", "Realtime period (us).", "value", "US"),
        Option(("--cpuset-cpus",), "cpuset_cpus", "CPUs allowed (e.g. 0-1).", "value", "LIST"),
        Option(("--cpuset-mems",), "cpuset_mems", "Memory nodes allowed.", "value", "LIST"),
        Option(("--pids-limit",), "pids_limit", "Maximum number of processes.", "value", "N"),
        Option(("--blkio-weight",), "blkio_weight", "Block IO weight (10-1000).", "value", "N"),
        Option(("--kernel-memory",), "kernel_memory", "Kernel memory limit (refused).", "value", "SIZE"),
        Option(("--kernel-memory-tcp",), "kernel_memory_tcp", "Kernel TCP memory limit (refused).",
               "value", "SIZE"),
        Option(("--l3-cache-schema",), "l3_cache_schema", "Intel RDT (refused).", "value", "S"),
        Option(("--mem-bw-schema",), "mem_bw_schema", "Intel RDT (refused).", "value", "S"),
    ),
    (_id(),),
)
SPEC = Command("spec", "Write a default config.json (like `runc spec`).", "kubirun.cli.handlers:spec",
               (_BUNDLE, Option(("--rootless",), "rootless", "A config for a non-root user.")))
FEATURES = Command("features", "Print what this kubirun supports (runtime-spec features.md JSON).",
                   "kubirun.cli.handlers:features")

RUN = Command(
    name="run",
    help="Run a container: from an image, or from an OCI bundle.\n\n"
         "`kubirun run IMAGE [-- CMD...]`: IMAGE is a directory (a root used in place), a "
         "root filesystem tar (plain, gzip, zstd, xz), a docker-save archive or an OCI layout "
         "(directory or tar; LAYOUT:NAME picks one image), detected by content, unpacked once "
         "into the store and mounted; CMD defaults to the image's Cmd, else /bin/sh.\n\n"
         "`kubirun run [-b BUNDLE] [-d] ID`: as `runc run`, create and start container ID from "
         "an OCI bundle (the current directory by default), then wait for it and delete it "
         "(unless -d). The bundle form is chosen with -b, or when IMAGE is not a path but the "
         "current directory has a config.json.",
    handler="kubirun.cli.handlers:run",
    options=(
        Option(("--name",), "name", "Container name (default: a random id).", "value", "NAME"),
        Option(("--hostname",), "hostname", "Hostname inside (default: the name).", "value", "NAME"),
        Option(("-e", "--env"), "env", "Set KEY=VALUE (or pass KEY from this environment).",
               "multiple", "KEY[=VALUE]", ()),
        Option(("-w", "--workdir"), "workdir",
               "Working directory inside (default: the image's WorkingDir, else /).",
               "value", "DIR"),
        Option(("-u", "--user"), "user", "Run as UID[:GID] or NAME[:GROUP] of the image.",
               "value", "USER"),
        Option(("-t", "--tty"), "tty", "Give the container a terminal (a pty made inside it)."),
        Option(("-i", "--interactive"), "interactive",
               "With -t, forward this terminal's input (without -t, stdin is always the caller's)."),
        Option(("--keep",), "keep", "Keep the container (its root, or its OCI state) after it exits."),
        Option(("-m", "--memory"), "memory", "Memory limit (bytes, or 512k, 64m, 1g).", "value", "SIZE"),
        Option(("--cpus",), "cpus", "CPU time limit, in CPUs (e.g. 0.5).", "value", "N"),
        Option(("--pids-limit",), "pids_limit", "Maximum number of processes.", "value", "N"),
        Option(("--cpuset-cpus",), "cpuset_cpus", "CPUs the container may run on (e.g. 0-1).",
               "value", "LIST"),
        Option(("--io-weight",), "io_weight", "Block IO weight, 10 to 1000.", "value", "N"),
        Option(("--network",), "network",
               "none, host, bridge or ns:PATH. Default: bridge when a bridge can be made"
               " (as root, or if kubi0/--bridge exists), else none (only lo);"
               " $KUBIRUN_NETWORK replaces this default.",
               "value", "MODE"),
        Option(("-p", "--publish"), "publish",
               "Bridge mode: publish a port, HOST:CONTAINER[/tcp|udp] (repeatable).",
               "multiple", "HOST:CONTAINER", ()),
        Option(("--nat",), "nat", "Bridge mode: IP forwarding and masquerading for the subnet"
               " (off unless asked)."),
        Option(("--bridge",), "bridge", "Bridge mode: the bridge to use or make (default kubi0).",
               "value", "NAME"),
        Option(("--subnet",), "subnet", "Bridge mode: the bridge's subnet (default 10.89.0.0/16).",
               "value", "CIDR"),
        Option(("--platform",), "platform",
               "The image to take from a multi-platform index, OS/ARCH[/VARIANT] (default: this"
               " host's).", "value", "PLATFORM"),
        Option(("--entrypoint",), "entrypoint",
               "Replace the image's Entrypoint (and its Cmd: CMD follows it); '' clears it.",
               "value", "PROGRAM"),
        Option(("--store",), "store", "The image store (default: $KUBIRUN_STORE, else"
               " /var/lib/kubirun).", "value", "DIR"),
        Option(("--init",), "init",
               "Run a tiny init as PID 1 that forwards signals and reaps (as docker run --init)."),
        Option(("--security-opt",), "security_opt",
               "seccomp=unconfined (no filter), seccomp=FILE (a docker, podman or runtime-spec"
               " profile instead of the default one), no-new-privileges (repeatable).",
               "multiple", "OPT", ()),
        Option(("-d", "--detach"), "detach", "Bundle form: do not wait for the container."),
        *_CREATE_OPTIONS,
    ),
    arguments=(Argument("image"), Argument("command", required=False, variadic=True)),
    epilog="Example: kubirun run rootfs/busybox.tar.gz -- ps aux",
)

_PLATFORM = Option(("--platform",), "platform",
                   "OS/ARCH[/VARIANT] to take from a multi-platform index (default: this host's).",
                   "value", "PLATFORM")
_STORE = Option(("--store",), "store",
                "The image store (default: $KUBIRUN_STORE, else /var/lib/kubirun).", "value", "DIR")
IMAGES_LS = Command("ls", "List the images of the store ($KUBIRUN_STORE, default /var/lib/kubirun).",
                    "kubirun.cli.images:ls",
                    (_FORMAT, Option(("-q", "--quiet"), "quiet", "Only ids."), _STORE))
IMAGES_IMPORT = Command(
    "import", "Import an image file or layout into the store (unpack its layers once).",
    "kubirun.cli.images:import_", (_PLATFORM, _STORE), (Argument("image"),),
    epilog="IMAGE: a root filesystem tar (plain, gzip, zstd, xz), a docker-save archive, or an"
           " OCI layout (directory or tar); LAYOUT:NAME picks one of several images.")
IMAGES_RM = Command("rm", "Remove images (by id prefix, name or source file) from the store.",
                    "kubirun.cli.images:rm",
                    (Option(("-f", "--force"), "force", "Even if a container uses it."), _STORE),
                    (Argument("images", variadic=True),))
IMAGES_PRUNE = Command("prune", "Remove unused layers and leftovers; with -a, unused images too.",
                       "kubirun.cli.images:prune",
                       (Option(("-a", "--all"), "all", "Also images no container uses."), _STORE))
GC = Command(
    "gc", "Remove what killed runtimes left behind.\n\n"
    "What a runtime killed at any point leaves: containers whose create or"
    " foreground run was killed, state directories without a state, store directories and"
    " network leases no live run owns, interrupted layer unpacks. Containers that merely"
    " stopped (created, or run with --keep) stay until deleted.",
    "kubirun.cli.handlers:gc", (_STORE,),
    epilog="Prints one line per thing removed. Safe beside other kubirun commands: what a live"
           " command owns is never touched; only kubirun's state root and store are looked at.")
BUNDLE = Command(
    "bundle", "Write an OCI bundle (config.json + rootfs/) from an image, for any OCI runtime.",
    "kubirun.cli.images:bundle",
    (_PLATFORM,
     Option(("--entrypoint",), "entrypoint", "Replace the image's Entrypoint (and its Cmd).",
            "value", "PROGRAM"),
     _STORE),
    (Argument("image"), Argument("directory"), Argument("command", required=False, variadic=True)),
    epilog="Example: kubirun bundle image.tar b && runc run -b b c1")

DEMO_PS = Command(
    name="ps",
    help="Show `ps aux` on the host, then inside a container: the PID namespace at work.",
    handler="kubirun.cli.handlers:demo_ps",
    options=(
        Option(("--image",), "image", "Image to use (default: the demo busybox image).",
               "value", "IMAGE"),
    ),
)

_DEMO_IMAGE = Option(("--image",), "image", "Image to use (default: the demo busybox image).",
                     "value", "IMAGE")
DEMO_NAMESPACES = Command(
    name="namespaces",
    help="Ask the same questions on the host and in a container: each namespace is another object.",
    handler="kubirun.cli.handlers:demo_namespaces", options=(_DEMO_IMAGE,))
DEMO_CGROUPS = Command(
    name="cgroups",
    help="A 16 MiB limit against 64 MiB allocated (OOM kill, exit 137); 0.2 CPU against a"
         " busy loop (throttled).",
    handler="kubirun.cli.handlers:demo_cgroups", options=(_DEMO_IMAGE,))
DEMO_ESCAPE = Command(
    name="escape",
    help="CVE-2024-21626: a working directory through /proc/self/fd/N, refused.",
    handler="kubirun.cli.handlers:demo_escape", options=(_DEMO_IMAGE,))
DEMO_REDIS = Command(
    name="redis",
    help="A Redis in seconds without any install: kubirun run rootfs/redis.tar.gz, redis-cli ping.",
    handler="kubirun.cli.handlers:demo_redis",
    options=(Option(("--image",), "image", "The redis image (default: rootfs/redis.tar.gz, made by"
                    " `make test-images`).", "value", "IMAGE"),))
DEMO_IMAGE = Command(
    name="image",
    help="An image is a tar.gz: a two-layer OCI image made here, stacked by overlay.",
    handler="kubirun.cli.handlers:demo_image",
    options=(Option(("--image",), "image", "The first layer, a root tar.gz (default: the demo"
                    " busybox image).", "value", "IMAGE"),))

_CRIU = "Not supported: kubirun has no CRIU integration yet (refused with one line)."
CHECKPOINT = Command("checkpoint", "Checkpoint a running container (not supported yet).",
                     "kubirun.cli.handlers:checkpoint", (), (_id(),), epilog=_CRIU)
RESTORE = Command("restore", "Restore a container from a checkpoint (not supported yet).",
                  "kubirun.cli.handlers:restore", (), (_id(),), epilog=_CRIU)

_NODE_SOCKET = Option(("--socket",), "socket_path", "The node's API socket (default: STATE_ROOT/"
                      "node.sock, or $KUBIRUN_NODE_SOCKET).", "value", "PATH")
_POD_KIND = Argument("kind")
NODE_SERVE = Command(
    "serve", "Run the node supervisor in the foreground: pods kept as a kubelet keeps them,"
    " an HTTP+JSON API on a unix socket (mode 0600), logs on stderr.",
    "kubirun.cli.node:serve",
    (_NODE_SOCKET,
     Option(("--network",), "network", "The pods' network: none (default) or bridge"
            " (hostNetwork: true pods use the host's).", "value", "MODE"),
     _STORE,
     Option(("--cgroup-parent",), "cgroup_parent", "The cgroup under which the containers"
            " go (default: /kubirun).", "value", "PATH")),
    epilog="It adopts the pods a previous `node serve` of this state root left (killed or"
           " stopped), with their restart counts and back-off; at SIGTERM or SIGINT it ends,"
           " leaving its pods running.")
NODE_APPLY = Command("apply", "Run the pods of a manifest (Kubernetes Pod v1, YAML or JSON).",
                     "kubirun.cli.node:apply",
                     (Option(("-f", "--filename"), "file", "The manifest (- for stdin).", "value",
                             "FILE"), _NODE_SOCKET))
NODE_GET = Command("get", "List pods (NAME READY STATUS RESTARTS AGE), or one.",
                   "kubirun.cli.node:get",
                   (Option(("-o", "--output"), "output", "wide, json, yaml or name.", "value",
                           "FORMAT"), _NODE_SOCKET),
                   (_POD_KIND, Argument("name", required=False)),
                   epilog="Example: kubirun node get pods -o wide", interspersed=True)
NODE_DESCRIBE = Command("describe", "Show a pod: its containers' states, probes, conditions and"
                        " events.", "kubirun.cli.node:describe", (_NODE_SOCKET,),
                        (_POD_KIND, Argument("name")), interspersed=True)
NODE_LOGS = Command(
    "logs", "Print a container's output.", "kubirun.cli.node:logs",
    (Option(("-c", "--container"), "container", "The container (if the pod has several).",
            "value", "NAME"),
     Option(("-p", "--previous"), "previous", "The previous instance's output (before its"
            " restart)."),
     Option(("--tail",), "tail", "Only the last N lines.", "value", "N"),
     Option(("-f", "--follow"), "follow", "Keep printing as it comes."),
     _NODE_SOCKET),
    (Argument("name"),), interspersed=True)
NODE_EXEC = Command("exec", "Run a command in a pod's container; its output and exit status.",
                    "kubirun.cli.node:exec_",
                    (Option(("-c", "--container"), "container", "The container (if the pod has"
                            " several).", "value", "NAME"), _NODE_SOCKET),
                    (Argument("name"), Argument("command", required=False, variadic=True)),
                    epilog="Example: kubirun node exec web -c app -- cat /etc/hostname",
                    interspersed=True)
NODE_DELETE = Command("delete", "Stop a pod (preStop, stop signal, KILL after the grace period)"
                      " and remove it.", "kubirun.cli.node:delete",
                      (Option(("--grace-period",), "grace_period", "Seconds before KILL (default:"
                              " the pod's terminationGracePeriodSeconds).", "value", "N"),
                       _NODE_SOCKET),
                      (_POD_KIND, Argument("name")), interspersed=True)

# Top-level commands; `demo` is a group of teaching demos.
COMMANDS = {c.name: c for c in (RUN, CREATE, START, STATE, KILL, DELETE, EXEC, PS, LIST, PAUSE,
                                 RESUME, EVENTS, UPDATE, SPEC, FEATURES, BUNDLE, CHECKPOINT,
                                 RESTORE, GC)}
GROUPS = {"demo": ("Teaching demos: one command, one lesson.",
                   {"ps": DEMO_PS, "namespaces": DEMO_NAMESPACES, "cgroups": DEMO_CGROUPS,
                             "image": DEMO_IMAGE, "escape": DEMO_ESCAPE,
                             "redis": DEMO_REDIS}),
          "images": ("The image store: each layer unpacked once, shared by containers.",
                     {c.name: c for c in (IMAGES_LS, IMAGES_IMPORT, IMAGES_RM, IMAGES_PRUNE)}),
          "node": ("Pods kept running as a kubelet keeps them: `node serve`, then kubectl's"
                   " verbs.",
                   {c.name: c for c in (NODE_SERVE, NODE_APPLY, NODE_GET, NODE_DESCRIBE,
                                        NODE_LOGS, NODE_EXEC, NODE_DELETE)})}
