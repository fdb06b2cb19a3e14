"""`cellpaint ui` as a user starts it: the server listens on loopback only unless --host opens it,
and then it says so. The process's listening sockets are read from the kernel (its /proc/PID/fd
and /proc/net/tcp, tcp6), and a non-loopback address of this machine is tried too."""
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


def listening(pid: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(address, port) of every TCP socket the process `pid` holds in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].split(":")
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append((_address(addr), int(port_hex, 16)))
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
        sockets = listening(ui.proc.pid)  # `cellpaint ui` becomes the server (exec), so this is its pid
        other = other_address()
        reached = other is not None and _reaches(other, ui.port)
    finally:
        ui.stop()
    assert ui.port in {port for _, port in sockets}, sockets
    assert all(addr.is_loopback for addr, _ in sockets), sockets
    assert not reached, f"the page answered on {other}"
    assert "warning" not in ui.output()


def test_ui_host_opens_it_wider_and_warns(tmp_path):
    ui = Ui(tmp_path / "ui.log", "--host", "0.0.0.0")
    try:
        sockets = listening(ui.proc.pid)
        other = other_address()
        reached = other is None or _reaches(other, ui.port)
    finally:
        ui.stop()
    assert (ipaddress.ip_address("0.0.0.0"), ui.port) in sockets, sockets
    assert reached
    assert "warning: listening on 0.0.0.0, not only on this machine" in ui.output()


def test_ui_refuses_a_weights_file_that_is_not_one(tmp_path, capsys):
    from cellpaint.cli import main

    assert main(["ui", "--weights", str(tmp_path / "lab1.safetensors")]) == 2
    assert "lab1.json: missing" in capsys.readouterr().err
