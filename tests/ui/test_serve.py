"""`cellpaint ui` as a user starts it: the server listens on loopback only unless --host opens it,
and then it says so. The listening sockets are read from the kernel (/proc/net/tcp, tcp6)."""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from pathlib import Path

import pytest

from tests.ui.server import Ui, other_address

pytestmark = pytest.mark.skipif(importlib.util.find_spec("streamlit") is None or not Path("/proc/net/tcp").exists(),
                                reason="needs streamlit (requirements-ui.txt) and Linux's /proc/net/tcp")


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # the kernel prints each 32-bit word in host order (little-endian here)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of every TCP socket in LISTEN state on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.append(_address(addr))
    return found


def _reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_ui_listens_on_loopback_only_by_default(tmp_path):
    ui = Ui(tmp_path / "ui.log")
    try:
        addrs = listening(ui.port)
        other = other_address()
        reached = other is not None and _reaches(other, ui.port)
    finally:
        ui.stop()
    assert addrs and all(a.is_loopback for a in addrs), addrs
    assert not reached, f"the page answered on {other}"
    assert "warning" not in ui.output()


def test_ui_host_opens_it_wider_and_warns(tmp_path):
    ui = Ui(tmp_path / "ui.log", "--host", "0.0.0.0")
    try:
        addrs = listening(ui.port)
        other = other_address()
        reached = other is None or _reaches(other, ui.port)
    finally:
        ui.stop()
    assert ipaddress.ip_address("0.0.0.0") in addrs, addrs
    assert reached
    assert "warning: listening on 0.0.0.0, not only on this machine" in ui.output()
