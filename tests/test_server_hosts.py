"""The app's connection only opens for the names this computer is reached by (issue 12, item 10):
a page elsewhere that points a name of its own at 127.0.0.1 (DNS rebinding) gets no connection.

Starts the server as `make run` does (only address and port on the command line, so
``.streamlit/config.toml`` is what is tested) and opens the WebSocket by hand with a chosen Host.
"""
from __future__ import annotations

import socket

import pytest
from browser_support import streamlit_server


def handshake_status(port: int, host: str, origin: str) -> int:
    """The HTTP status the server answers a WebSocket opening request with (101: opened)."""
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: streamlit\r\nOrigin: {origin}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request.encode())
        first_line = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(first_line.split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosts")
    dirs = {"tmp": tmp, "runs": tmp / "runs", "workspace": tmp / "workspace",
            "cache": tmp_path_factory.getbasetemp() / "tl-cache"}
    with streamlit_server(dirs, like_make_run=True) as srv:
        yield srv


def test_the_app_opens_for_this_computers_names(server):
    port = int(server["url"].rsplit(":", 1)[1])
    for name in ("127.0.0.1", "localhost"):
        assert handshake_status(port, f"{name}:{port}", f"http://{name}:{port}") == 101, name


def test_a_rebound_name_gets_no_connection(server):
    port = int(server["url"].rsplit(":", 1)[1])
    status = handshake_status(port, f"attacker.example:{port}", f"http://attacker.example:{port}")
    assert status != 101 and status >= 400, status
