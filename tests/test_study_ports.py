"""The local Ray's dashboard port: free, and never one of Ray's own fixed defaults."""

import socket

from depthlab import study


def test_free_port_skips_the_ports_ray_reserves(monkeypatch):
    offered = iter([52365, 6379, 45678])  # what the OS hands out, in turn

    class Probe:
        def __init__(self, *args):
            self.port = next(offered)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            assert address == ("127.0.0.1", 0)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", Probe)
    assert study._free_port() == 45678


def test_free_port_is_bindable():
    port = study._free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing listens there
    assert port not in study.RAY_DEFAULT_PORTS
