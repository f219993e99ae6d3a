"""Retry with backoff: deterministic delays, refusals passed through, a loud give-up."""

from __future__ import annotations

import pytest

from screenlake.errors import ConfigurationError, PacsRefusedError, PacsUnavailableError
from screenlake.pacs.retry import RetryPolicy, TransientError, with_retry


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, first_delay_s=0.5, factor=3.0, max_delay_s=10.0)
    assert policy.delays() == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert RetryPolicy(attempts=1).delays() == []


def test_transient_failures_are_retried_after_the_delays() -> None:
    slept: list[float] = []
    retried: list[int] = []
    failures = [TransientError("HTTP 503"), TransientError("HTTP 503")]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "answer"

    result = with_retry(
        flaky,
        policy=RetryPolicy(attempts=3, first_delay_s=1.0),
        endpoint="https://pacs.example/dicom-web",
        what="searching studies",
        sleep=slept.append,
        on_retry=lambda attempt, delay, error: retried.append(attempt),
    )
    assert result == "answer"
    assert slept == [1.0, 2.0] and retried == [1, 2]


def test_giving_up_names_the_endpoint_what_failed_and_the_attempts() -> None:
    slept: list[float] = []

    def down() -> None:
        raise TransientError("ConnectionError")

    with pytest.raises(PacsUnavailableError) as error:
        with_retry(
            down,
            policy=RetryPolicy(attempts=3, first_delay_s=0.25),
            endpoint="pacs.example:104 (called AE 'PACS')",
            what="retrieving",
            sleep=slept.append,
        )
    message = str(error.value)
    assert "pacs.example:104 (called AE 'PACS')" in message
    assert "retrieving" in message and "3 attempt(s)" in message and "ConnectionError" in message
    assert slept == [0.25, 0.5]


def test_a_refusal_is_not_retried() -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise PacsRefusedError("HTTP 401")

    with pytest.raises(PacsRefusedError):
        with_retry(refused, policy=RetryPolicy(), endpoint="x", what="y", sleep=lambda s: None)
    assert calls == [1]


@pytest.mark.parametrize("settings", [{"attempts": 0}, {"first_delay_s": -1.0}, {"factor": 0.5}])
def test_a_nonsensical_policy_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**settings)  # type: ignore[arg-type]
