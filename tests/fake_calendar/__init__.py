"""A local Google Calendar v3 server for tests (see server.py and store.py)."""

from .server import FakeCalendar, Faults
from .store import ApiError, FakeStore

__all__ = ["FakeCalendar", "Faults", "FakeStore", "ApiError"]
