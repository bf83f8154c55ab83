"""``with device:`` for the I/O classes that hold a device or a file open."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound="ClosesOnExit")


class ClosesOnExit:
    """A context manager whose exit calls :meth:`close`."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
