"""Health probe of the local Kafka and FerretDB images: one real request over the wire protocol.

    qbo-probe kafka HOST:PORT    ApiVersions answered without error
    qbo-probe mongo HOST:PORT    {ping: 1} answered with ok: 1

Only the Python standard library: the images have Debian's python3 and no client library, and
an open port alone would not say the server answers (see docs/design.md, "Container images").
"""

from __future__ import annotations

import socket
import struct
import sys


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def kafka(sock: socket.socket) -> bool:
    # ApiVersions v0: api_key 18, version 0, correlation id, client id; every broker keeps v0
    # so that clients can discover the versions it speaks.
    request = struct.pack(">hhih", 18, 0, 7, 9) + b"qbo-probe"
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", _read(sock, 4))
    correlation, error = struct.unpack(">ih", _read(sock, size)[:6])
    return correlation == 7 and error == 0


def _cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


def mongo(sock: socket.socket) -> bool:
    # OP_MSG (2013) holding one body section: {ping: 1, $db: "admin"}.
    elements = b"\x10" + _cstring("ping") + struct.pack("<i", 1)
    elements += b"\x02" + _cstring("$db") + struct.pack("<i", 6) + _cstring("admin")
    document = struct.pack("<i", len(elements) + 5) + elements + b"\x00"
    body = struct.pack("<I", 0) + b"\x00" + document
    sock.sendall(struct.pack("<iiii", 16 + len(body), 7, 0, 2013) + body)
    (size,) = struct.unpack("<i", _read(sock, 4))
    reply = _read(sock, size - 4)
    # ok is a double 1.0 in a successful reply.
    return b"\x01ok\x00" + struct.pack("<d", 1.0) in reply


def main(argv: list[str]) -> int:
    kind, address = argv
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.settimeout(5)
        healthy = {"kafka": kafka, "mongo": mongo}[kind](sock)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
