"""Pick free TCP ports for local servers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that is free right now.

    The port is released before returning, so another process can grab it before the caller
    binds it; servers started on it fail fast with a clear error in that (rare) case.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
