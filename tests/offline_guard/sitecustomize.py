"""Refuse every network connection that is not to a loopback address, and log each attempt.

conftest imports this module for the test process and puts its folder first on ``PYTHONPATH`` so
every Python subprocess the suite starts (the LiteLLM proxy, the CLI, the sample user project's
pytest) imports it too, as ``sitecustomize``. Attempts are appended to the file named by
``PAYG_NETLOG``; the session fails if that file is not empty at the end (see conftest).
Without ``PAYG_NETLOG`` in the environment it does nothing.
"""

import ipaddress
import os
import socket

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _loopback(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def install(log_path):
    """Patch ``socket`` in this process; idempotent."""
    if getattr(socket, "_payg_offline_guard", None):
        return

    def refuse(what, host, port=None):
        with open(os.environ.get("PAYG_NETLOG") or log_path, "a") as f:  # read late: a test may redirect it
            f.write(f"pid {os.getpid()}: {what} {host}:{port}\n")
        raise OSError(f"network blocked by the test suite (only 127.0.0.1 is allowed): {what} {host}:{port}")

    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refuse("connect", *address[:2])
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refuse("connect_ex", *address[:2])
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        if not _loopback(host):
            refuse("getaddrinfo", host, port)
        return getaddrinfo(host, port, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = guarded_connect, guarded_connect_ex, guarded_getaddrinfo
    socket._payg_offline_guard = log_path


if os.environ.get("PAYG_NETLOG"):
    install(os.environ["PAYG_NETLOG"])
