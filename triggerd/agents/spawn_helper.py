"""The spawner process: starts commands for the daemon and tells it when each ends.

Run by path (`python -I -S spawn_helper.py FD`), never imported: it needs only the standard
library, starts in milliseconds, and holds none of the daemon's memory or threads. FD is its end
of a SOCK_SEQPACKET socket pair. Each request is one packet, a JSON object {"argv", "cwd", "env"}
with three descriptors (the command's stdin, stdout and stderr); the answer, in the order the
requests came, is {"pid", "forked": [ns, ns]} (CLOCK_BOOTTIME read around the spawn) or
{"error", "errno"}. When a command ends: {"exited": pid, "code": returncode}. It exits when the
daemon's end closes, leaving running commands running (the daemon ends those after a crash,
SPEC 5.2), and ignores the signals a terminal sends to the daemon's process group.

A command is started with posix_spawn (vfork and exec in the C library: about half of Popen's CPU),
in a session of its own, with the signals this process ignores set back to their defaults, and
with no descriptor but its three pipes: every other descriptor here is close-on-exec. The program
is looked up on the PATH of the command's environment, as Popen does.
"""

from __future__ import annotations

import fcntl
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


POLL_SECONDS = 0.05  # how often commands without a pid file descriptor are looked at


class Spawner:
    """This process's state: the daemon's socket, and the commands whose ends it watches."""

    def __init__(self, fd: int) -> None:
        self.home = os.open(".", os.O_RDONLY)  # where commands without a working_dir start: the daemon's folder
        os.set_inheritable(fd, False)
        self.daemon = socket.socket(fileno=fd)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.daemon, selectors.EVENT_READ)
        self.watched: dict[int, int] = {}  # pidfd -> its command's pid
        self.polled: set[int] = set()  # commands without a pidfd (none could be opened): polled

    def run(self) -> None:
        while True:
            for key, _ in self.selector.select(POLL_SECONDS if self.polled else None):
                if key.fileobj is self.daemon:
                    if not self.serve():
                        return
                elif self.reap(self.watched[int(key.fd)]):
                    self.selector.unregister(key.fd)
                    os.close(int(key.fd))
                    del self.watched[int(key.fd)]
            for pid in [pid for pid in self.polled if self.reap(pid)]:
                self.polled.discard(pid)

    def reap(self, pid: int) -> bool:
        """Tell the daemon how the command ended, if it has; whether it had."""
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            self.daemon.sendall(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())
        return bool(done)

    def serve(self) -> bool:
        """Start the command of one request and answer; False once the daemon has gone."""
        try:
            data, received, _, _ = socket.recv_fds(self.daemon, MAX_PACKET, 3)
        except ConnectionError:
            return False
        if not data:
            return False
        # Above 2, close-on-exec: a command gets them as its 0, 1 and 2 only, and no dup2 below
        # overwrites one not yet copied (were the daemon started with 1 or 2 closed).
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in received]
        for fd in received:
            os.close(fd)
        try:
            answer, pid = self.start(json.loads(data), fds)
        except Exception as exc:  # a request it cannot use: say so, and serve the next one
            answer, pid = {"error": f"{exc.__class__.__name__}: {exc}", "errno": 0}, 0
        finally:
            for fd in fds:
                os.close(fd)
        self.daemon.sendall(json.dumps(answer).encode())  # first: nothing may fail between spawn and answer
        if pid:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:  # out of descriptors, say: look at it every POLL_SECONDS instead
                self.polled.add(pid)
            else:
                self.watched[pidfd] = pid
                self.selector.register(pidfd, selectors.EVENT_READ)
        return True

    def start(self, request: dict[str, object], fds: list[int]) -> tuple[dict[str, object], int]:
        """posix_spawn the request's command; (the answer, its pid or 0)."""
        argv, env, cwd = request["argv"], request["env"], request["cwd"]
        assert isinstance(argv, list)
        assert isinstance(env, dict)
        assert cwd is None or isinstance(cwd, str)
        try:
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
                    os.fchdir(self.home)
        except OSError as exc:
            return {"error": exc.strerror or str(exc), "errno": exc.errno or 0}, 0
        return {"pid": pid, "forked": [before, after]}, pid


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
    Spawner(int(sys.argv[1])).run()
