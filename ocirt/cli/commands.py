"""The command table: every subcommand, its flags as runc spells them, and its handler.

Only data lives here; handlers are imported by name when their command runs.
"""

from __future__ import annotations

from ocirt.cli.parser import BOOL, INT, LIST, STR, Command, Flag

# The program's one-line summary and description: `ocirt --help` and ocirt(8) show them.
SUMMARY = "Open Container Initiative runtime"
DESCRIPTION = (
    "ocirt runs containers from OCI bundles (a config.json and a root filesystem) and\n"
    "from SIF images. Its command line is runc's, so engines can use it in runc's place."
)

GLOBAL_FLAGS = (
    Flag("debug", BOOL, "enable debug logging"),
    Flag("log", STR, "set the log file to write ocirt logs to (default is '/dev/stderr')", ""),
    Flag("log-format", STR, "set the log format ('text' (default), or 'json')", "text"),
    Flag("root", STR, "root directory for storage of container state (default: /run/ocirt, "
         "or $XDG_RUNTIME_DIR/ocirt for an unprivileged user)", ""),
    Flag("criu", STR, "path to the criu binary used for checkpoint and restore", "criu"),
    Flag("systemd-cgroup", BOOL, "enable systemd cgroup support, expects cgroupsPath to be "
         "of form \"slice:prefix:name\" for e.g. \"system.slice:ocirt:434234\""),
    Flag("rootless", STR, "ignore cgroup permission errors ('true', 'false', or 'auto')", "auto"),
    Flag("version, v", BOOL, "print the version"),
)

_BUNDLE = Flag("bundle, b", STR, "path to the root of the bundle directory, defaults to the "
               "current directory", "")
_CONSOLE = Flag("console-socket", STR, "path to an AF_UNIX socket which will receive a file "
                "descriptor referencing the master end of the console's pseudoterminal", "")
_PIDFILE = Flag("pid-file", STR, "specify the file to write the process id to", "")
_NO_PIVOT = Flag("no-pivot", BOOL, "do not use pivot root to jail process inside rootfs. This "
                 "should be used whenever the rootfs is on top of a ramdisk")
_NO_KEYRING = Flag("no-new-keyring", BOOL, "do not create a new session keyring for the "
                   "container. This will cause the container to inherit the calling processes "
                   "session key")
_PRESERVE = Flag("preserve-fds", INT, "Pass N additional file descriptors to the container "
                 "(stdio + $LISTEN_FDS + N in total)", 0)

_ID = "<container-id>"

COMMANDS: dict[str, Command] = {}


def _add(cmd: Command) -> None:
    COMMANDS[cmd.name] = cmd
    for alias in cmd.aliases:
        COMMANDS[alias] = cmd


_IMAGE = (
    Flag("image", STR, "run a SIF image: its bundle is made (verified, mounted in place) and "
         "removed with the container; arguments after the id replace its command", "",
         metavar="IMAGE.sif"),
    Flag("key", LIST, "a trusted public key (PEM) the SIF image (--image, or a root.path "
         "naming a .sif) must be signed with",
         metavar="PUBLIC.pem"),
    Flag("pgp-key", LIST, "a trusted OpenPGP public key for the SIF image",
         metavar="PUBLIC.asc"),
    Flag("writable-tmpfs", BOOL, "with --image: a writable root, its changes in a tmpfs "
         "(a scratch directory without root) that goes with the container"),
)

_add(Command(
    "create", "ocirt.cli.lifecycle:create", "create a container",
    f"{_ID}  |  --image IMAGE.sif {_ID} [-- args...]",
    (_BUNDLE, _CONSOLE, _PIDFILE, _NO_PIVOT, _NO_KEYRING, _PRESERVE, *_IMAGE), 1, None,
    "The create command creates an instance of a container for a bundle. The bundle\n"
    "is a directory with a specification file named \"config.json\" and a root\n"
    "filesystem.",
))
_add(Command(
    "run", "ocirt.cli.lifecycle:run", "create and run a container",
    f"{_ID}  |  --image IMAGE.sif {_ID} [-- args...]",
    (_BUNDLE, _CONSOLE, Flag("detach, d", BOOL, "detach from the container's process"),
     Flag("keep", BOOL, "do not delete the container after it exits"), _PIDFILE,
     Flag("no-subreaper", BOOL, "disable the use of the subreaper used to reap reparented "
          "processes"), _NO_PIVOT, _NO_KEYRING, _PRESERVE, *_IMAGE), 1, None,
    "The run command creates an instance of a container for a bundle and starts it.",
))
_add(Command("start", "ocirt.cli.lifecycle:start",
             "executes the user defined process in a created container", _ID, (), 1, 1))
_add(Command("state", "ocirt.cli.lifecycle:state", "output the state of a container",
             _ID, (), 1, 1))
_add(Command(
    "kill", "ocirt.cli.lifecycle:kill",
    "kill sends the specified signal (default: SIGTERM) to the container's init process",
    f"{_ID} [signal]",
    (Flag("all, a", BOOL, "send the specified signal to all processes inside the container"),),
    1, 2,
))
_add(Command(
    "delete", "ocirt.cli.lifecycle:delete",
    "delete any resources held by the container often used with detached container", _ID,
    (Flag("force, f", BOOL, "Forcibly deletes the container if it is still running (uses "
          "SIGKILL)"),), 1, 1,
))
_add(Command(
    "list", "ocirt.cli.lifecycle:list_containers", "lists containers started by ocirt with "
    "the given root", "",
    (Flag("format, f", STR, "select one of: table or json (default: \"table\")", "table"),
     Flag("quiet, q", BOOL, "display only container IDs")), 0, 0,
))
_add(Command(
    "spec", "ocirt.cli.info:spec", "create a new specification file", "",
    (_BUNDLE, Flag("rootless", BOOL, "generate a configuration for a rootless container")), 0, 0,
))
_add(Command("features", "ocirt.cli.info:features", "show the enabled features", "", (), 0, 0))
_CRIU_SHARED = (
    Flag("work-path", STR, "path for saving work files and logs", ""),
    Flag("tcp-established", BOOL, "allow open tcp connections"),
    Flag("ext-unix-sk", BOOL, "allow external unix sockets"),
    Flag("shell-job", BOOL, "allow shell jobs"),
    Flag("file-locks", BOOL, "handle file locks, for safety"),
    Flag("manage-cgroups-mode", STR, "cgroups mode: soft|full|strict|ignore (default: soft)",
         ""),
    Flag("empty-ns", LIST, "create a namespace, but don't restore its properties"),
    Flag("auto-dedup", BOOL, "enable auto deduplication of memory images"),
)
_LAZY = Flag("lazy-pages", BOOL, "use userfaultfd to lazily restore memory pages")
_add(Command(
    "checkpoint", "ocirt.cli.checkpoint:checkpoint", "checkpoint a running container",
    _ID,
    (Flag("image-path", STR, "path for saving criu image files", ""),
     _CRIU_SHARED[0],
     Flag("parent-path", STR, "path for previous criu image files in pre-dump", ""),
     Flag("leave-running", BOOL, "leave the process running after checkpointing"),
     *_CRIU_SHARED[1:5],
     Flag("pre-dump", BOOL, "dump container's memory information only, leave the "
          "container running after this"),
     *_CRIU_SHARED[5:],
     Flag("page-server", STR, "ADDRESS:PORT of the page server", ""),
     _LAZY,
     Flag("status-fd", INT, "criu writes \\0 to this FD once lazy-pages is ready", -1),
     Flag("sif", STR, "also add the checkpoint (CRIU's image files and the container's "
          "config.json) to this SIF image, as objects of a new group", "",
          metavar="IMAGE.sif"),
     Flag("sign-key", LIST, "with --sif: sign the checkpoint's group with this private key",
          metavar="PRIVATE.pem")),
    1, 1,
    "The checkpoint command saves the state of the container instance with CRIU\n"
    "(criu(8), the global --criu names its binary). Without --leave-running or\n"
    "--pre-dump the container is stopped and deleted once its state is saved.\n"
    "With --sif the checkpoint is carried inside a SIF image too; `ocirt restore\n"
    "--sif` restores from it, on this machine or another.",
))
_add(Command(
    "restore", "ocirt.cli.checkpoint:restore", "restore a container from a previous "
    "checkpoint", _ID,
    (_CONSOLE, Flag("image-path", STR, "path to criu image files for restoring", ""),
     *_CRIU_SHARED[:5], _CRIU_SHARED[5], _BUNDLE,
     Flag("detach, d", BOOL, "detach from the container's process"), _PIDFILE,
     Flag("no-subreaper", BOOL, "disable the use of the subreaper used to reap reparented "
          "processes"), _NO_PIVOT, *_CRIU_SHARED[6:],
     _LAZY,
     Flag("lsm-profile", STR, "Specify an LSM profile to be used during restore in the form "
          "of TYPE:NAME.", ""),
     Flag("lsm-mount-context", STR, "Specify an LSM mount context to be used during "
          "restore.", ""),
     Flag("sif", STR, "restore from the newest checkpoint in this SIF image (its "
          "config.json is used, with the root and mount sources of --bundle)", "",
          metavar="IMAGE.sif"),
     Flag("key", LIST, "with --sif: a trusted public key (PEM) the checkpoint must be "
          "signed with", metavar="PUBLIC.pem"),
     Flag("pgp-key", LIST, "with --sif: a trusted OpenPGP public key", metavar="PUBLIC.asc")),
    1, 1,
    "Restores the saved state of the container instance that was previously saved\n"
    "using the ocirt checkpoint command, as a new container of the bundle's config.",
))

# --- commands that later work fills in (listed now so their flags live in one table) ----

_add(Command(
    "exec", "ocirt.cli.exec:exec_", "execute new process inside the container",
    f"{_ID} <command> [command options]  || -p process.json {_ID}",
    (_CONSOLE,
     Flag("cwd", STR, "current working directory in the container", ""),
     Flag("env, e", LIST, "set environment variables"),
     Flag("tty, t", BOOL, "allocate a pseudo-TTY"),
     Flag("user, u", STR, "UID (format: <uid>[:<gid>])", ""),
     Flag("additional-gids, g", LIST, "additional gids"),
     Flag("process, p", STR, "path to the process.json", ""),
     Flag("detach, d", BOOL, "detach from the container's process"),
     _PIDFILE,
     Flag("process-label", STR, "set the asm process label for the process commonly used "
          "with selinux", ""),
     Flag("apparmor", STR, "set the apparmor profile for the process", ""),
     Flag("no-new-privs", BOOL, "set the no new privileges value for the process"),
     Flag("cap, c", LIST, "add a capability to the bounding set for the process"),
     _PRESERVE,
     Flag("cgroup", LIST, "run the process in an (existing) sub-cgroup(s). Format is "
          "[<controller>:]<cgroup>."),
     Flag("ignore-paused", BOOL, "allow exec in a paused container")),
    1, None, interspersed=False,
))
_add(Command(
    "ps", "ocirt.cli.cgroup:ps", "ps displays the processes running inside a container",
    f"{_ID} [ps options]",
    (Flag("format, f", STR, "select one of: table or json (default: \"table\")", "table"),),
    1, None, interspersed=False,
))
_add(Command("pause", "ocirt.cli.cgroup:pause",
             "pause suspends all processes inside the container", _ID, (), 1, 1))
_add(Command("resume", "ocirt.cli.cgroup:resume",
             "resumes all processes that have been previously paused", _ID, (), 1, 1))
_add(Command(
    "events", "ocirt.cli.cgroup:events",
    "display container events such as OOM notifications, cpu, memory, and IO usage "
    "statistics", _ID,
    (Flag("interval", STR, "set the stats collection interval", "5s"),
     Flag("stats", BOOL, "display the container's stats then exit")), 1, 1,
))
_add(Command(
    "update", "ocirt.cli.cgroup:update", "update container resource constraints", _ID,
    (Flag("resources, r", STR, "path to the file containing the resources to update or '-' "
          "to read from the standard input", ""),
     Flag("blkio-weight", STR, "Specifies per cgroup weight, range is from 10 to 1000", ""),
     Flag("cpu-period", STR, "CPU CFS period to be used for hardcapping (in usecs). 0 to use "
          "system default", ""),
     Flag("cpu-quota", STR, "CPU CFS hardcap limit (in usecs). Allowed cpu time in a given "
          "period", ""),
     Flag("cpu-burst", STR, "CPU CFS hardcap burst limit (in usecs)", ""),
     Flag("cpu-share", STR, "CPU shares (relative weight vs. other containers)", ""),
     Flag("cpu-rt-period", STR, "CPU realtime period to be used for hardcapping (in usecs)",
          ""),
     Flag("cpu-rt-runtime", STR, "CPU realtime hardcap limit (in usecs)", ""),
     Flag("cpu-idle", STR, "set cgroup SCHED_IDLE or not, 0: default behavior, 1: "
          "SCHED_IDLE", ""),
     Flag("cpuset-cpus", STR, "CPU(s) to use", ""),
     Flag("cpuset-mems", STR, "Memory node(s) to use", ""),
     Flag("kernel-memory", STR, "(obsoleted; do not use)", ""),
     Flag("kernel-memory-tcp", STR, "(obsoleted; do not use)", ""),
     Flag("memory", STR, "Memory limit (in bytes)", ""),
     Flag("memory-reservation", STR, "Memory reservation or soft_limit (in bytes)", ""),
     Flag("memory-swap", STR, "Total memory usage (memory + swap); set '-1' to enable "
          "unlimited swap", ""),
     Flag("pids-limit", STR, "Maximum number of pids allowed in the container", ""),
     Flag("l3-cache-schema", STR, "The string of Intel RDT/CAT L3 cache schema", ""),
     Flag("mem-bw-schema", STR, "The string of Intel RDT/MBA memory bandwidth schema", "")),
    1, 1,
))
_add(Command(
    "sif", "ocirt.cli.sif:main", "work with SIF images: list, header, dump, create, add, "
    "del, keygen, sign, verify, bundle, unbundle", "<subcommand> [arguments...]",
    (), 0, None, interspersed=False,
))
_add(Command(
    "validate", "ocirt.cli.validate:validate", "validate a bundle's config.json against the "
    "runtime-spec JSON schema", "",
    (_BUNDLE,), 0, 0,
))
