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
import errno
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
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours, theirs = (stdin_w, stdout_r, stderr_r), (stdin_r, stdout_w, stderr_w)
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=stdin_r,
                stdout=stdout_w,
                stderr=stderr_w,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own process group, so that one signal reaches every child
            )
        except BaseException:
            _close(ours)
            raise
        finally:
            _close(theirs)
        forked = (before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        return cls(popen.pid, ours, forked, os.getpid(), _watch_exit(loop, popen))

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


@dataclass(frozen=True)
class _Started:
    """The spawner's answer to one request: the command's pid and the watch on its exit, or why not."""

    pid: int = 0
    forked: tuple[int, int] = (0, 0)
    parent: int = 0  # the spawner's pid
    exited: asyncio.Future[int] | None = None
    error: OSError | None = None
    lost: bool = False  # the spawner was lost before it answered


_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)  # send errors that mean it has gone


class Spawner:
    """The daemon's side of the spawner process (spawn_helper.py): started on first use, started
    again if it dies; while it cannot be had, commands start in the daemon itself."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._answers: deque[asyncio.Future[_Started]] = deque()  # requests sent, in order
        self._exits: dict[int, asyncio.Future[int]] = {}  # pid -> its exit status, from its answer on
        self._room: asyncio.Future[None] | None = None  # while the socket is full
        self._served = 0  # answers the current spawner gave
        self._usable = hasattr(os, "pidfd_open")

    async def start(self, argv: list[str], *, cwd: str | None, env: Mapping[str, str]) -> Child:
        """Start a command (OSError if it cannot be): through the spawner, or here when it cannot serve."""
        request = json.dumps({"argv": argv, "cwd": cwd, "env": dict(env)}).encode()
        if len(request) > MAX_REQUEST or not self._ready():
            return Child.start_here(argv, cwd=cwd, env=env)
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours, theirs = (stdin_w, stdout_r, stderr_r), (stdin_r, stdout_w, stderr_w)
        answer: asyncio.Future[_Started] = loop.create_future()
        try:
            sent = await self._send(request, theirs)
            if sent:
                self._answers.append(answer)  # no await between the send and this: answers come in this order
        except BaseException:
            _close(ours)
            raise
        finally:
            _close(theirs)
        if not sent:  # nothing was sent: it starts here, once
            _close(ours)
            return Child.start_here(argv, cwd=cwd, env=env)
        try:
            started = await answer
        except BaseException:  # cancelled: what the spawner starts for it is ended, here or in _readable
            _close(ours)
            if answer.done() and not answer.cancelled() and answer.result().exited is not None:
                self._abandon(answer.result().pid)
            raise
        if started.lost:
            # In the moment between its spawn and its answer (microseconds) it may have started the
            # command, which then reads the end of its input; otherwise it never started: start it here.
            _close(ours)
            log.warning("the spawner was lost before it answered; the command starts in the daemon")
            return Child.start_here(argv, cwd=cwd, env=env)
        if started.error is not None:
            _close(ours)
            raise started.error
        assert started.exited is not None
        return Child(started.pid, ours, started.forked, started.parent, started.exited)

    async def _send(self, request: bytes, fds: tuple[int, int, int]) -> bool:
        """One request with its descriptors, waiting while the socket is full (a burst of starts);
        False if it could not be sent (then the command starts in the daemon)."""
        loop = asyncio.get_running_loop()
        while self._socket is not None:
            sock = self._socket
            try:
                socket.send_fds(sock, [request], list(fds))
                return True
            except BlockingIOError:
                if self._room is None:  # one wait for room, shared by every start waiting
                    self._room = loop.create_future()
                    loop.add_writer(sock.fileno(), self._roomy)
                await asyncio.shield(self._room)
            except OSError as exc:
                if exc.errno in _GONE and sock is self._socket:
                    self._lost(f"cannot reach the spawner: {exc}")
                else:
                    log.warning("cannot send a command to the spawner (%s): it starts in the daemon", exc)
                return False
        return False

    def _roomy(self) -> None:
        """The socket has room again (or the spawner is gone): every start waiting tries again."""
        room, self._room = self._room, None
        if room is not None:
            if self._socket is not None:
                asyncio.get_running_loop().remove_writer(self._socket.fileno())
            if not room.done():
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
        while self._socket is not None:
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
                exited = self._exits.pop(int(message["exited"]), None)
                if exited is not None and not exited.done():
                    exited.set_result(int(message["code"]))
            elif self._answers:
                self._served += 1
                self._answered(self._answers.popleft(), message)

    def _answered(self, answer: asyncio.Future[_Started], message: dict[str, Any]) -> None:
        """Settle a start's answer. The exit is watched from here on, so that a spawner lost right
        after it answered still settles it; a start cancelled meanwhile has its command ended."""
        if "error" in message:
            number, text = int(message["errno"]), str(message["error"])
            started = _Started(error=OSError(number, text) if number else OSError(text))
        else:
            assert self._process is not None
            pid = int(message["pid"])
            exited = self._exits[pid] = asyncio.get_running_loop().create_future()
            forked = (int(message["forked"][0]), int(message["forked"][1]))
            started = _Started(pid, forked, self._process.pid, exited)
        if answer.done():  # its start() was cancelled meanwhile: nothing will watch it
            if started.exited is not None:
                self._abandon(started.pid)
        else:
            answer.set_result(started)

    def _abandon(self, pid: int) -> None:
        """A command whose start() was cancelled: it never got its input; end its group, forget it."""
        self._exits.pop(pid, None)
        signal_group(pid, signal.SIGKILL)

    def _lost(self, why: str) -> None:
        """The spawner is gone: what waited on it is settled; the next command starts a new one, unless
        this one never answered at all (then it cannot run here: commands start in the daemon)."""
        if not self._served:
            self._usable = False
        self._roomy()  # starts waiting for room find the spawner gone and start here
        self._shut()
        log.error(
            "%s; commands it started are no longer watched%s",
            why,
            "" if self._usable else "; it never answered, so commands start in the daemon from now on",
        )
        self._served = 0
        while self._answers:
            answer = self._answers.popleft()
            if not answer.done():
                answer.set_result(_Started(lost=True))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-1)  # its status is not known
        self._exits.clear()

    def _shut(self) -> subprocess.Popen[bytes] | None:
        """Close our end and forget the spawner; return its process, to be waited for."""
        self._roomy()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
        return process

    async def close(self) -> None:
        """Stop the spawner: it exits when our end closes, leaving what still runs running (the
        dispatcher has ended its runs by then)."""
        if self._socket is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._roomy()
            self._socket.close()
            self._socket = None
        process, self._process = self._process, None
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
