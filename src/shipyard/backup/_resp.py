"""A minimal Redis protocol (RESP2) client: enough to copy keys between servers with MIGRATE.

redis-cli takes commands on argv (where a password would show) or as text lines (where binary
keys break); this speaks the protocol directly, so keys and passwords travel as bytes on a socket.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import BackupError, DatastoreUnreachable


class RespClient:
    def __init__(self, host: str, port: int, *, password: str | None = None, timeout_s: float = 30.0) -> None:
        self.where = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise DatastoreUnreachable(
                f"cannot connect to Redis at {self.where}: {exc.strerror or exc}; check the datastore's"
                " local host and port, and that Redis runs"
            ) from None
        self._file = self._sock.makefile("rb")
        if password is not None:
            self.call(b"AUTH", password.encode())

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, *args: bytes | str | int) -> Any:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        try:
            self._sock.sendall(payload)
            return self._read()
        except OSError as exc:
            raise BackupError(f"Redis at {self.where}: {exc.strerror or exc}") from None

    def _read(self) -> Any:
        line = self._file.readline()
        if not line:
            raise BackupError(f"Redis at {self.where} closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BackupError(f"Redis at {self.where}: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self._file.read(length + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise BackupError(f"Redis at {self.where}: unexpected reply {line[:40]!r}")

    def scan_keys(self, batch: int = 1000) -> list[bytes]:
        keys: list[bytes] = []
        cursor = b"0"
        while True:
            reply = self.call(b"SCAN", cursor, b"COUNT", batch)
            cursor, found = reply[0], reply[1]
            keys.extend(found)
            if cursor == b"0":
                return keys
