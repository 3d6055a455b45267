"""A TCP relay between a daemon and a broker that withholds the daemon's first acknowledgement.

The crash window of SPEC 5.4 (the run committed, the acknowledgement not yet at the broker) is
made deterministic this way: the relay passes every byte both ways until the daemon sends an
acknowledgement (an AMQP basic.ack frame, a NATS publish to $JS.ACK.), forwards what came before
it, and from then on drops everything the daemon sends on that connection. The test waits for
`held`, SIGKILLs the daemon, and the broker sees a connection that ended without the ack.
Nothing of the broker or of the daemon is replaced: both talk their real protocol over it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

# basic.ack: a method frame (type 1, any channel, 13 bytes) of class 60, method 80.
AMQP_ACK = re.compile(rb"\x01..\x00\x00\x00\x0d\x00\x3c\x00\x50", re.DOTALL)
NATS_ACK = re.compile(rb"H?PUB \$JS\.ACK\.")


class AckHold:
    """Listen on a free loopback port, relay to `port`; `withhold` applies to new connections."""

    def __init__(self, port: int, ack: re.Pattern[bytes]) -> None:
        self.port = port
        self.ack = ack
        self.withhold = True
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port = int(self.listener.getsockname()[1])
        self.listener.settimeout(0.2)
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            withhold = self.withhold
            threading.Thread(target=self._pump, args=(client, upstream, withhold), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, withhold: bool) -> None:
        holding = False
        try:
            while data := source.recv(65536):
                if holding:
                    continue
                found = self.ack.search(data) if withhold else None
                if found is not None:
                    data, holding = data[: found.start()], True
                    self.held.set()
                if data:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
