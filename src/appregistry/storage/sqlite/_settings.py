"""The SQLite repository of the storage's own settings (`appregistry.ports.SettingsRepository`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._repositories import _Session


class _Settings:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def get(self, name: str) -> bytes | None:
        row = self._s.one("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    def put(self, name: str, value: bytes) -> None:
        self._s.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, bytes(value)),
        )
