"""The spawner process: starts commands for the daemon and tells it when each ends.

Run by path (`python -I -S spawn_helper.py FD`), never imported: it needs only the standard
library, starts in milliseconds, and holds none of the daemon's memory or threads. FD is its end
of a SOCK_SEQPACKET socket pair. Each request is one packet, a JSON object {"argv", "cwd", "env"}
with three descriptors (the command's stdin, stdout and stderr); the answer, in the order the
requests came, is {"pid", "forked": [ns, ns]} (CLOCK_BOOTTIME read around the spawn) or
{"error", "errno"}. When a command ends: {"exited": pid, "code": returncode}. It exits when the
daemon's end closes, leaving running commands running (the daemon ends those after a crash,
SPEC 5.2), and ignores the signals a terminal sends to the daemon's process group.

A command is started with posix_spawn (vfork and exec in the C library: a third of Popen's CPU),
in a session of its own, with the signals this process ignores set back to their defaults, and
with no descriptor but its three pipes: every other descriptor here is close-on-exec. The program
is looked up on the PATH of the command's environment, as Popen does.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time

MAX_PACKET = 1 << 20
IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULTS = (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ)  # Python ignores the last two; Popen restores them


def main(fd: int) -> None:
    home = os.open(".", os.O_RDONLY)  # where commands without a working_dir start: the daemon's folder
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    os.set_inheritable(fd, False)
    daemon = socket.socket(fileno=fd)
    selector = selectors.DefaultSelector()
    selector.register(daemon, selectors.EVENT_READ)
    waiting: dict[int, int] = {}  # pidfd -> its command's pid
    while True:
        for key, _ in selector.select():
            if key.fileobj is daemon:
                if not serve(daemon, selector, waiting, home):
                    return
            else:
                pidfd = int(key.fd)
                pid, status = os.waitpid(waiting[pidfd], os.WNOHANG)
                if pid:
                    selector.unregister(pidfd)
                    os.close(pidfd)
                    del waiting[pidfd]
                    code = os.waitstatus_to_exitcode(status)
                    daemon.sendall(json.dumps({"exited": pid, "code": code}).encode())


def serve(daemon: socket.socket, selector: selectors.BaseSelector, waiting: dict[int, int], home: int) -> bool:
    """Start the command of one request; False once the daemon has gone."""
    try:
        data, fds, _, _ = socket.recv_fds(daemon, MAX_PACKET, 3)
    except ConnectionError:
        return False
    if not data:
        return False
    try:
        request = json.loads(data)
        argv, env, cwd = request["argv"], request["env"], request["cwd"]
        for fd in fds:
            os.set_inheritable(fd, False)  # the command gets them as 0, 1 and 2 only
        if cwd is not None:
            os.chdir(cwd)
        try:
            program = find(argv[0], env)
            before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            pid = os.posix_spawn(
                program,
                argv,
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds[:3])],
                setsid=True,  # its own process group, so that one signal reaches every child
                setsigdef=DEFAULTS,
            )
            after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        finally:
            if cwd is not None:
                os.fchdir(home)
    except OSError as exc:
        answer: dict[str, object] = {"error": exc.strerror or str(exc), "errno": exc.errno or 0}
    except Exception as exc:  # a request it cannot use: say so, and serve the next one
        answer = {"error": f"{exc.__class__.__name__}: {exc}", "errno": 0}
    else:
        answer = {"pid": pid, "forked": [before, after]}
        pidfd = os.pidfd_open(pid)
        waiting[pidfd] = pid
        selector.register(pidfd, selectors.EVENT_READ)
    finally:
        for fd in fds:
            os.close(fd)
    daemon.sendall(json.dumps(answer).encode())
    return True


def find(name: str, env: dict[str, str]) -> str:
    """The program `name` names: itself if it holds a '/', else the first executable file of that name
    on the environment's PATH (os.defpath without one). FileNotFoundError, or PermissionError when
    only files that cannot be executed were found, as exec would have said."""
    if "/" in name:
        return name
    denied = None
    for folder in os.get_exec_path(env):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return path
            denied = denied or path
    if denied is not None:
        raise PermissionError(13, "Permission denied", denied)
    raise FileNotFoundError(2, "No such file or directory", name)


if __name__ == "__main__":
    main(int(sys.argv[1]))
