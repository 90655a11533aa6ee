"""A raw-socket STOMP peer for black-box tests: write exact bytes, read parsed frames."""

from __future__ import annotations

import socket
import time

from queueit.stomp import Frame, FrameParser, Limits

CONNECT_12 = b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:guest\npasscode:guest\n\n\x00"


class RawPeers:
    """Opens peers and closes them all at the end of a test (see the ``raw`` fixture)."""

    def __init__(self) -> None:
        self.peers: list[RawPeer] = []

    def __call__(self, address: tuple[str, int]) -> RawPeer:
        peer = RawPeer(address)
        self.peers.append(peer)
        return peer

    def close_all(self) -> None:
        for peer in self.peers:
            peer.close()


class RawPeer:
    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.parser = FrameParser(Limits(), max_frame_size=Limits().max_frame_size)
        self.parser.version = "1.2"
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, frame: bytes = CONNECT_12) -> Frame:
        self.write(frame)
        reply = self.read_frame()
        assert reply.command.value == "CONNECTED", reply
        return reply

    def read_frame(self, timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame arrived in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                raise ConnectionError("connection closed before a frame arrived")
            self.parser.feed(data)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the connection (reads EOF)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                continue
            if not data:
                self.closed = True
                return True
            self.parser.feed(data)
        return False

    def close(self) -> None:
        self.sock.close()
