"""The seed connector's ``s3.retry.backoff.ms``: the base of the exponential backoff between S3 retries.

botocore's ``standard`` and ``adaptive`` retry modes wait ``random() * min(base * 2**(attempt-1), 20 s)``
before each retry (full jitter), from a base they fix: 50 ms, or 1 s after a throttling answer
such as S3's ``503 SlowDown``. :func:`set_retry_backoff` changes only that base. Which answers are
retried, how many attempts (the ``retries`` of the ``aws`` connection's ``config_kwargs``), the
retry quota and adaptive mode's rate limiting stay botocore's: the client's retry handler is
replaced by botocore's own ``RetryHandler``, built from the same parts as
``botocore.retries.standard.register_retry_handler`` builds it, with one backoff of the given
base for every retryable answer. The retrying itself is still done by botocore's endpoint;
there is no retry loop here, and botocore's own ``delay_amount`` (with its handling of an
``x-amz-retry-after`` answer) computes each wait.

``legacy`` mode is refused: its handler is a different machinery (``botocore.retryhandler``)
with its own retry conditions, and swapping in the standard handler would change which
errors are retried, not only how long to wait.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any

from botocore.retries import quota, standard

from airflow_kafka_backup.engine.errors import ConfigurationError, KafkaBackupError

MAX_BACKOFF_S = 20  # botocore's cap on one wait (standard.ExponentialBackoff's max_backoff)
MAX_RETRY_BACKOFF_MS = MAX_BACKOFF_S * 1000  # a larger base would make every wait the cap
RETRY_MODES = ("standard", "adaptive")


def validate_retry_backoff_ms(value: object) -> int | None:
    """``None`` (or empty) keeps botocore's backoff; otherwise whole milliseconds, 0 to 20000."""
    if value is None or value in ("", "None"):  # "None": a null Param rendered without native rendering
        return None
    message = (f"s3_retry_backoff_ms must be a whole number of milliseconds from 0 to {MAX_RETRY_BACKOFF_MS}, "
               f"got {value!r}.")
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigurationError(message)
    try:
        ms = int(value) if isinstance(value, (int, float)) else int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigurationError(message) from None
    if not 0 <= ms <= MAX_RETRY_BACKOFF_MS:
        raise ConfigurationError(message)
    return ms


def jitter() -> float:
    """Full jitter, uniform in [0, 1): the default random source of :class:`BackoffFromBase`."""
    return random.random()


class BackoffFromBase(standard.ExponentialBackoff):
    """botocore's own full-jitter backoff, ``random() * min(base * 2**(attempt-1), 20 s)``, from the given base.

    Only the base is ours: ``delay_amount`` is botocore's, which asks :meth:`_get_base_scale`
    for the base, so botocore's cap and its handling of an ``x-amz-retry-after`` answer stay.
    """

    def __init__(self, base_ms: int, random: Callable[[], float] | None = None,
                 max_backoff: float = MAX_BACKOFF_S) -> None:
        super().__init__(max_backoff=max_backoff, random=random if random is not None else (lambda: jitter()))
        self.base_ms = base_ms

    def _get_base_scale(self, context: standard.RetryContext) -> float:
        return self.base_ms / 1000


def _supported(name: str, callable_: Callable) -> bool:
    return name in inspect.signature(callable_).parameters


def set_retry_backoff(client: Any, base_ms: int, *, random: Callable[[], float] | None = None,
                      source: str = "the client") -> standard.RetryHandler:
    """Back off from ``base_ms`` between the retries of ``client`` (a botocore client in standard or adaptive mode).

    ``source`` names where the retry mode came from, for the message when it is ``legacy``.
    Returns the new handler.
    """
    base_ms = validate_retry_backoff_ms(base_ms)
    if base_ms is None:
        raise ConfigurationError("s3_retry_backoff_ms must be a whole number of milliseconds, got None.")
    retries = client.meta.config.retries or {}
    mode = retries.get("mode")
    if mode not in RETRY_MODES:
        raise ConfigurationError(
            f"s3_retry_backoff_ms (the seed's s3.retry.backoff.ms) needs botocore's 'standard' or 'adaptive' "
            f"retry mode, but {source} uses {mode!r}: set \"config_kwargs\": {{\"retries\": {{\"mode\": "
            "\"standard\"}} in the aws connection's extra, or leave s3_retry_backoff_ms unset."
        )
    if not hasattr(standard.ExponentialBackoff, "_get_base_scale"):
        raise ConfigurationError(
            "s3_retry_backoff_ms needs botocore 1.43 or later (its standard retry backoff has a base to set); "
            "upgrade botocore or leave s3_retry_backoff_ms unset."
        )
    # What botocore's ClientCreator hands register_retry_handler: None means its default.
    max_attempts = retries.get("total_max_attempts")
    if max_attempts is None:
        max_attempts = standard.DEFAULT_MAX_ATTEMPTS
    service = client.meta.service_model.service_id.hyphenize()
    adapter = standard.RetryEventAdapter()
    throttling = standard.ThrottlingErrorDetector(adapter)
    retry_quota = standard.RetryQuotaChecker(quota.RetryQuota(), throttling)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=max_attempts),
            retry_backoff=BackoffFromBase(base_ms, random=random),
        ),
        retry_event_adapter=adapter,
        retry_quota=retry_quota,
        **({"service_name": service} if _supported("service_name", standard.RetryHandler) else {}),
    )
    events = client.meta.events
    unique_id = f"retry-config-{service}"
    if not _registered(events, unique_id):
        # Unregistering an id that is not there does nothing; botocore's handler would then answer first.
        raise KafkaBackupError(
            f"botocore's retry handler ({unique_id!r}) is not where s3_retry_backoff_ms expects it in this botocore "
            "version; leave s3_retry_backoff_ms unset."
        )
    events.unregister(f"needs-retry.{service}", unique_id=unique_id)
    # botocore's own quota stays subscribed to after-call, but nothing draws on it any more.
    events.register(f"after-call.{service}", retry_quota.release_retry_quota)
    events.register(f"needs-retry.{service}", handler.needs_retry, unique_id=unique_id)
    return handler


def _registered(events: Any, unique_id: str) -> bool:
    """Whether a handler is registered under ``unique_id`` (``True`` when the emitter cannot tell)."""
    emitter = getattr(events, "_emitter", events)
    handlers = getattr(emitter, "_unique_id_handlers", None)
    return handlers is None or unique_id in handlers
