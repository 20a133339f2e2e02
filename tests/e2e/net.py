"""Raw-socket helpers for the e2e tests (bytes the HTTP clients would refuse to send)."""

import socket


def exchange(port: int, data: bytes, wait: float = 1.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and read until the peer closes or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
