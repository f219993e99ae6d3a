"""What the DICOMweb and DIMSE sources share: the look-back window the sensor searches, the
retry policy, the network timeout, and counters of what was asked of the PACS."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import Counter
from datetime import date

from pydantic import PrivateAttr

from resources.sources import StudySource
from screenlake.pacs.query import lookback_range
from screenlake.pacs.retry import RetryPolicy


class PacsSource(StudySource):
    """A source that is a PACS queried over the network."""

    lookback_days: int = 7
    lookback_until: str | None = None
    retry_attempts: int = 5
    retry_delay_s: float = 1.0
    timeout_s: float = 60.0

    _counts: Counter[str] = PrivateAttr(default_factory=Counter)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """What errors and logs name: the PACS's address, never credentials or patients."""

    @abstractmethod
    def day_summaries(self) -> dict[date, str]:
        """Studies and instances per day of the look-back window."""

    def available_days(self) -> list[date]:
        """Days of the look-back window that hold studies of a routed modality."""
        return sorted(self.day_summaries())

    def request_counts(self) -> dict[str, int]:
        """Requests (and, over DIMSE, associations) made so far by kind, attempts included."""
        with self._lock:
            return dict(self._counts)

    def _count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, first_delay_s=self.retry_delay_s)

    def _lookback(self) -> str:
        return lookback_range(self.lookback_until, self.lookback_days, date.today())
