"""Retry with exponential backoff, kind to a PACS that is busy and loud about one that is down.

Deterministic: no jitter, and the sleep function is a parameter, so tests neither wait nor guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from screenlake.errors import ConfigurationError, PacsUnavailableError

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (connection refused, timeout, 5xx, aborted association).

    Sources raise it around the network error; its message must hold no patient data, because it
    ends up in the final error when the retries run out.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: `attempts` tries in all, the waits between them
    growing from `first_delay_s` by `factor` up to `max_delay_s`."""

    attempts: int = 5
    first_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(
                f"PACS retry attempts must be at least 1; got {self.attempts} "
                "(SCREENLAKE_PACS_RETRIES)"
            )
        if self.first_delay_s < 0 or self.max_delay_s < 0 or self.factor < 1:
            raise ConfigurationError(
                "PACS retry delays must be non-negative and the backoff factor at least 1 "
                "(SCREENLAKE_PACS_RETRY_DELAY)"
            )

    def delays(self) -> list[float]:
        """The waits between attempts: one fewer than `attempts`."""
        return [
            min(self.first_delay_s * self.factor**i, self.max_delay_s)
            for i in range(self.attempts - 1)
        ]


def with_retry(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    endpoint: str,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, float, TransientError], None] | None = None,
) -> T:
    """Run `operation`, retrying `TransientError`s after the policy's delays.

    Any other exception passes straight through (a refusal is not retried). When the attempts
    are spent, raises PacsUnavailableError naming `endpoint`, `what` was being done, and the
    last failure.
    """
    delays = policy.delays()
    for attempt in range(policy.attempts):
        try:
            return operation()
        except TransientError as error:
            if attempt == len(delays):
                raise PacsUnavailableError(
                    f"the PACS at {endpoint} did not answer while {what}, after "
                    f"{policy.attempts} attempt(s) over {sum(delays):.1f} s; last failure: "
                    f"{error}. Check that the PACS is up and reachable from this machine, "
                    "then re-run the partition: files already landed are kept."
                ) from error
            if on_retry is not None:
                on_retry(attempt + 1, delays[attempt], error)
            sleep(delays[attempt])
    raise AssertionError("unreachable: the loop returns or raises")
