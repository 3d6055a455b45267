"""A command's process, watched on the event loop by its file descriptors.

asyncio's subprocess API builds a transport, three pipe transports, their protocols and stream
readers for each command, and takes about ten loop turns to hand a started process back: under
load that was 10 ms of a run's 13 (issue 17). Here the process is started with Popen (vfork and
exec, no shell), its pipes are read and written with plain loop readers and writers, and its exit
is learnt from a pid file descriptor (Linux 5.3+; elsewhere a thread waits on it, as Python 3.11's
default child watcher does). Nothing else in triggerd reaps children, so the pid is ours until
we reap it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from triggerd.agents.process_group import boot_id, identify
from triggerd.runs import ProcessGroup

READ_CHUNK = 65536


@dataclass(frozen=True)
class Output:
    stdout: bytes
    stderr_tail: bytes  # the last `tail` bytes
    overflow: bool  # stdout passed the limit: what was read up to it, the process still running


class Child:
    """A started command: feed it, read it, wait for it. Raises OSError if it cannot be started."""

    def __init__(self, argv: list[str], *, cwd: str | None, env: Mapping[str, str]) -> None:
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._popen = subprocess.Popen(  # argv from a definition, never a shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so that one signal reaches every child
            bufsize=0,  # the pipes are used by their descriptors only
        )
        self.pid = self._popen.pid
        self._forked = (before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        stdin, stdout, stderr = self._popen.stdin, self._popen.stdout, self._popen.stderr
        assert stdin is not None
        assert stdout is not None
        assert stderr is not None
        self._pipes = (stdin, stdout, stderr)
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._watch_exit()

    def identity(self) -> ProcessGroup | None:
        """The record of the process group it leads (None: it has already exited and been reaped).

        Its start time, in clock ticks of CLOCK_BOOTTIME, is the tick its fork fell in: when the
        clock read before and after Popen falls in one tick, that is it, without reading /proc.
        (Read while the child is still in exec, /proc/PID/stat cost the event loop 70 us of CPU
        and 180 us in all per command: issue 17.)
        """
        if self.returncode is not None:
            return None
        tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        before, after = (moment // tick for moment in self._forked)
        if before == after:
            return ProcessGroup(pgid=self.pid, start_ticks=before, boot_id=boot_id())
        return identify(self.pid, parent=os.getpid())

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfds here: a thread waits, as asyncio's default watcher does
            waited = self._loop.run_in_executor(None, self._popen.wait)
            waited.add_done_callback(lambda done: self._exit(done.result()))
            return

        def readable() -> None:
            code = self._popen.poll()  # reaps it, and Popen knows it is gone
            if code is not None:
                self._loop.remove_reader(pidfd)
                os.close(pidfd)
                self._exit(code)

        self._loop.add_reader(pidfd, readable)

    def _exit(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def communicate(self, data: bytes, limit: int, tail: int) -> Output:
        """Write `data` to stdin and close it; read stdout to its end (or past `limit`), wait for the
        exit, and read stderr to its end, keeping its last `tail` bytes. Cancelling it leaves the
        process running: the caller ends its group."""
        pipes = self._pipes
        stdin, stdout, stderr = (pipe.fileno() for pipe in pipes)
        for fd in (stdin, stdout, stderr):
            os.set_blocking(fd, False)
        out, err = bytearray(), bytearray()
        out_done: asyncio.Future[bool] = self._loop.create_future()
        err_done: asyncio.Future[None] = self._loop.create_future()
        watched: list[tuple[int, bool]] = []  # (fd, is a writer) still on the loop

        def unwatch(fd: int, writer: bool = False) -> None:
            if (fd, writer) in watched:
                watched.remove((fd, writer))
                (self._loop.remove_writer if writer else self._loop.remove_reader)(fd)

        def feed() -> None:
            nonlocal data
            try:
                while data:
                    data = data[os.write(stdin, data) :]
            except BlockingIOError:  # the pipe is full: go on when it drains
                if (stdin, True) not in watched:
                    watched.append((stdin, True))
                    self._loop.add_writer(stdin, feed)
                return
            except OSError:  # a broken pipe: it does not read its input, its choice
                pass
            unwatch(stdin, writer=True)
            pipes[0].close()

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
            self._loop.add_reader(fd, callback)
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
        for pipe in self._pipes:
            pipe.close()

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)


def _read(fd: int) -> bytes | None:
    """A chunk of the pipe, b'' at its end, None if nothing is there yet."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        return os.read(fd, READ_CHUNK)
    return None
