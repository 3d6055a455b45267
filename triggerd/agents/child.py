"""A command's process, watched on the event loop by its file descriptors.

asyncio's subprocess API builds a transport, three pipe transports, their protocols and stream
readers for each command, and takes about ten loop turns to hand a started process back: under
load that was 10 ms of a run's 13 (issue 17). Here a command's pipes are read and written with
plain loop readers and writers, and it is started one of two ways:

- by the spawner process (Spawner, spawn_helper.py), which the daemon runs beside itself: the
  daemon sends it the command and three pipe ends, and it tells the daemon the pid and, later,
  the exit status. Starting a process (vfork and exec) stops the thread that starts it until
  the new process has exec'd, about 0.3 ms under load: in the daemon that thread would be the
  event loop's, 44 % of its time when it ran a thousand commands a second.
- in the daemon itself, with Popen, where the spawner cannot serve (no pid file descriptors, a
  command line too long for one packet, or the spawner could not be started). Its exit is then
  learnt from a pid file descriptor on the loop (Linux 5.3+; elsewhere a thread waits on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triggerd.agents.process_group import boot_id, identify, signal_group
from triggerd.runs import ProcessGroup

log = logging.getLogger("triggerd.agents")
READ_CHUNK = 65536
MAX_REQUEST = 60_000  # bytes of one request to the spawner; a longer command line starts here
HELPER = Path(__file__).with_name("spawn_helper.py")


@dataclass(frozen=True)
class Output:
    stdout: bytes
    stderr_tail: bytes  # the last `tail` bytes
    overflow: bool  # stdout passed the limit: what was read up to it, the process still running


class Child:
    """A started command: feed it, read it, wait for it.

    `pipes` are our ends of its stdin, stdout and stderr; `forked` the CLOCK_BOOTTIME readings
    around its fork; `parent` the pid of the process that started it; `exited` its exit status.
    """

    def __init__(
        self, pid: int, pipes: tuple[int, int, int], forked: tuple[int, int], parent: int, exited: asyncio.Future[int]
    ) -> None:
        self.pid = pid
        self._pipes = pipes
        self._forked = forked
        self._parent = parent
        self.exited = exited
        self._open = True

    @classmethod
    def start_here(cls, argv: list[str], *, cwd: str | None, env: Mapping[str, str]) -> Child:
        """Start it from the daemon's own thread (Popen: vfork and exec, no shell). OSError if it cannot."""
        loop = asyncio.get_running_loop()
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so that one signal reaches every child
            bufsize=0,
        )
        forked = (before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        pipes = tuple(os.dup(pipe.fileno()) for pipe in (popen.stdin, popen.stdout, popen.stderr) if pipe is not None)
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        assert len(pipes) == 3
        return cls(popen.pid, (pipes[0], pipes[1], pipes[2]), forked, os.getpid(), _watch_exit(loop, popen))

    def identity(self) -> ProcessGroup | None:
        """The record of the process group it leads (None: it has already exited and been reaped).

        Its start time, in clock ticks of CLOCK_BOOTTIME, is the tick its fork fell in: when the
        clock read before and after the spawn falls in one tick, that is it, without reading /proc.
        (Read while the child is still in exec, /proc/PID/stat cost the event loop 70 us of CPU
        and 180 us in all per command: issue 17.)
        """
        if self.exited.done():
            return None
        tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        before, after = (moment // tick for moment in self._forked)
        if before == after:
            return ProcessGroup(pgid=self.pid, start_ticks=before, boot_id=boot_id())
        return identify(self.pid, parent=self._parent)

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def communicate(self, data: bytes, limit: int, tail: int) -> Output:
        """Write `data` to stdin and close it; read stdout to its end (or past `limit`), wait for the
        exit, and read stderr to its end, keeping its last `tail` bytes. Cancelling it leaves the
        process running: the caller ends its group."""
        loop = asyncio.get_running_loop()
        stdin, stdout, stderr = self._pipes
        for fd in self._pipes:
            os.set_blocking(fd, False)
        out, err = bytearray(), bytearray()
        out_done: asyncio.Future[bool] = loop.create_future()
        err_done: asyncio.Future[None] = loop.create_future()
        watched: list[tuple[int, bool]] = []  # (fd, is a writer) still on the loop

        def unwatch(fd: int, writer: bool = False) -> None:
            if (fd, writer) in watched:
                watched.remove((fd, writer))
                (loop.remove_writer if writer else loop.remove_reader)(fd)

        def feed() -> None:
            nonlocal data
            try:
                while data:
                    data = data[os.write(stdin, data) :]
            except BlockingIOError:  # the pipe is full: go on when it drains
                if (stdin, True) not in watched:
                    watched.append((stdin, True))
                    loop.add_writer(stdin, feed)
                return
            except OSError:  # a broken pipe: it does not read its input, its choice
                pass
            unwatch(stdin, writer=True)
            os.close(stdin)  # its end of input
            self._pipes = (-1, stdout, stderr)

        def read_out() -> None:
            chunk = _read(stdout)
            if chunk is None:
                return
            out.extend(chunk)
            if not chunk or len(out) > limit:
                unwatch(stdout)
                if not out_done.done():
                    out_done.set_result(len(out) > limit)

        def read_err() -> None:
            chunk = _read(stderr)
            if chunk is None:
                return
            err.extend(chunk)
            del err[:-tail]
            if not chunk:
                unwatch(stderr)
                if not err_done.done():
                    err_done.set_result(None)

        for fd, callback in ((stdout, read_out), (stderr, read_err)):
            watched.append((fd, False))
            loop.add_reader(fd, callback)
        try:
            feed()
            if await out_done:
                return Output(bytes(out[:limit]), b"", True)
            await asyncio.shield(self.exited)
            await err_done
            return Output(bytes(out), bytes(err), False)
        finally:
            for fd, writer in list(watched):
                unwatch(fd, writer)
            self.close()

    def close(self) -> None:
        """Close our ends of its pipes (what it writes after this is lost; a read of its input ends)."""
        if self._open:
            self._open = False
            for fd in self._pipes:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """The exit status of a child of the daemon, learnt from its pid file descriptor on the loop."""
    exited: asyncio.Future[int] = loop.create_future()
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfds here: a thread waits, as asyncio's default watcher does
        waited = loop.run_in_executor(None, popen.wait)

        def done(waited: asyncio.Future[int]) -> None:
            if not exited.done():
                exited.set_result(waited.result())

        waited.add_done_callback(done)
        return exited

    def readable() -> None:
        code = popen.poll()  # reaps it, and Popen knows it is gone
        if code is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(code)

    loop.add_reader(pidfd, readable)
    return exited


def _read(fd: int) -> bytes | None:
    """A chunk of the pipe, b'' at its end, None if nothing is there yet."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        return os.read(fd, READ_CHUNK)
    return None


class Spawner:
    """The daemon's side of the spawner process (spawn_helper.py): started on first use, started
    again if it dies; while it cannot be had, commands start in the daemon itself."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._answers: deque[asyncio.Future[dict[str, Any]]] = deque()  # requests sent, in order
        self._exits: dict[int, asyncio.Future[int]] = {}  # pid -> its exit status
        self._early: dict[int, int] = {}  # pid -> the status of a command that ended before start() took it
        self._abandoned: set[int] = set()  # started for a start() cancelled meanwhile: ended, not watched
        self._room: asyncio.Future[None] | None = None  # while the socket is full
        self._served = 0  # answers the current spawner gave
        self._usable = hasattr(os, "pidfd_open")

    async def start(self, argv: list[str], *, cwd: str | None, env: Mapping[str, str]) -> Child:
        """Start a command (OSError if it cannot be): through the spawner, or here when it cannot serve."""
        request = json.dumps({"argv": argv, "cwd": cwd, "env": dict(env)}).encode()
        if len(request) > MAX_REQUEST or not self._ready():
            return Child.start_here(argv, cwd=cwd, env=env)
        assert self._process is not None
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours, theirs = (stdin_w, stdout_r, stderr_r), (stdin_r, stdout_w, stderr_w)
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        try:
            await self._send(request, theirs)
            self._answers.append(answer)  # no await between the send and this: answers come in this order
        except OSError as exc:
            for fd in ours:
                os.close(fd)
            self._lost(f"cannot reach the spawner: {exc}")
            return Child.start_here(argv, cwd=cwd, env=env)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            started = await answer
        except OSError:  # the spawner was lost before it answered: start it here
            for fd in ours:
                os.close(fd)  # what it may have started meanwhile reads the end of its input
            log.warning("the spawner was lost before it answered; the command starts in the daemon")
            return Child.start_here(argv, cwd=cwd, env=env)
        except BaseException:  # cancelled: _readable ends what the spawner starts for it
            for fd in ours:
                os.close(fd)
            raise
        if "error" in started:
            for fd in ours:
                os.close(fd)
            raise OSError(int(started["errno"]), str(started["error"]))
        pid = int(started["pid"])
        exited: asyncio.Future[int] = loop.create_future()
        if pid in self._early:  # it ended before this took it
            exited.set_result(self._early.pop(pid))
        else:
            self._exits[pid] = exited
        forked = (int(started["forked"][0]), int(started["forked"][1]))
        return Child(pid, (stdin_w, stdout_r, stderr_r), forked, self._process.pid, exited)

    async def _send(self, request: bytes, fds: tuple[int, int, int]) -> None:
        """One request with its descriptors, waiting while the socket is full (a burst of starts)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._socket is None:
                raise OSError("the spawner is gone")
            try:
                socket.send_fds(self._socket, [request], list(fds))
                return
            except BlockingIOError:
                if self._room is None:  # one wait for room, shared by every start waiting
                    self._room = loop.create_future()
                    loop.add_writer(self._socket.fileno(), self._roomy)
                await asyncio.shield(self._room)

    def _roomy(self) -> None:
        """The socket has room again: every start waiting tries again."""
        room, self._room = self._room, None
        if self._socket is not None:
            asyncio.get_running_loop().remove_writer(self._socket.fileno())
        if room is not None and not room.done():
            room.set_result(None)

    def _ready(self) -> bool:
        if self._socket is not None:
            return True
        if not self._usable:
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(HELPER), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            log.warning("cannot start the spawner process (%s): commands start in the daemon", exc)
            self._usable = False
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self._socket = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._socket is not None
        while True:
            try:
                packet = self._socket.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"the spawner's socket failed: {exc}")
                return
            if not packet:
                self._lost("the spawner process ended")
                return
            message = json.loads(packet)
            if "exited" in message:
                self._ended(int(message["exited"]), int(message["code"]))
            elif self._answers:
                self._served += 1
                answer = self._answers.popleft()
                if not answer.done():
                    answer.set_result(message)
                elif "pid" in message:  # its start() was cancelled meanwhile: nothing will watch it
                    self._abandoned.add(int(message["pid"]))
                    signal_group(int(message["pid"]), signal.SIGKILL)  # it never got its input

    def _ended(self, pid: int, code: int) -> None:
        exited = self._exits.pop(pid, None)
        if exited is not None:
            if not exited.done():
                exited.set_result(code)
        elif pid in self._abandoned:
            self._abandoned.discard(pid)
        else:
            self._early[pid] = code

    def _lost(self, why: str) -> None:
        """The spawner is gone: what waited on it fails; the next command starts a new one, unless
        this one never answered at all (then it cannot run here: commands start in the daemon)."""
        if not self._served:
            self._usable = False
        self._roomy()  # starts waiting for room find the spawner gone and start here
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.kill()
            self._process.wait()
            self._process = None
        log.error(
            "%s; commands it started are no longer watched%s",
            why,
            "" if self._usable else "; it never answered, so commands start in the daemon from now on",
        )
        self._served = 0
        while self._answers:
            answer = self._answers.popleft()
            if not answer.done():
                answer.set_exception(OSError(f"{why}"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-1)
        self._exits.clear()
        self._early.clear()
        self._abandoned.clear()

    async def close(self) -> None:
        """Stop the spawner: it leaves what still runs running (the dispatcher has ended its runs)."""
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._process is not None:
            process, self._process = self._process, None
            await asyncio.to_thread(process.wait, 10)
