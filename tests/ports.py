"""A free loopback port, for the tests that start real servers (MLflow, Flower, Ray)."""
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
