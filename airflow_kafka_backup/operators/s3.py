"""Where a backup lives and how its objects are written: the S3 side every task shares."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator, Context, Variable
from airflow.sdk.exceptions import ErrorType

from airflow_kafka_backup.compat import AirflowFailException, mask_secret, render_template_to_string
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.settings import clean_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.s3_retry import validate_retry_backoff_ms
from airflow_kafka_backup.engine.storage.s3_settings import DEFAULT_PART_SIZE, PLACEHOLDER_CUSTOMER_KEY, S3WriteSettings

if TYPE_CHECKING:
    import jinja2

# Shapes of the name fields (see ``S3BackupBaseOperator.text_fields``): one name, a list of
# names (or one comma-separated string), a mapping of names to names, and names or a bool
# (``consumer_groups``: True for all groups, False for none).
NAME, NAMES, NAME_MAPPING, NAMES_OR_BOOL = "name", "names", "name mapping", "names or bool"


class UserInputError(ConfigurationError, AirflowFailException):
    """A :class:`ConfigurationError` Airflow fails at once, skipping the task's retries: the same Params, arguments
    or bucket would fail the same way, and the person who filled the form should see it now."""


def fail_fast_on_user_errors(execute: Callable) -> Callable:
    """Decorates an ``execute`` that validates user input: a ConfigurationError it raises becomes a UserInputError
    with the same message (still a ConfigurationError to its callers)."""

    @functools.wraps(execute)
    def wrapper(self, context):
        try:
            return execute(self, context)
        except ConfigurationError as error:
            if isinstance(error, AirflowFailException):
                raise
            raise UserInputError(str(error)) from error

    return wrapper


def is_template(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


def as_text(field: str, value: object, shape: str = NAME) -> Any:
    """``value`` of a name field (bucket, prefix, topics, ...) with ints turned back into text.

    With ``render_template_as_native_obj`` (the DAG factories') a bucket ``123456789012``, a
    prefix ``2024`` or a topic ``2024``, all legal names, come out of rendering as ints; here
    they are names again. Anything else that is no name (a bool, a float, a nested list) is
    refused naming the field, rather than failing later inside botocore or ``str.strip``.
    ``None`` passes: whether the field may be empty is for its own validation to say.
    """
    if shape == NAMES_OR_BOOL:
        return value if isinstance(value, bool) else as_text(field, value, NAMES)
    if shape == NAMES and isinstance(value, list | tuple):
        return [as_text(f"{field}[{i}]", v) for i, v in enumerate(value)]
    if shape == NAME_MAPPING and isinstance(value, Mapping):
        return {as_text(f"a {field} key", k): as_text(f"{field}[{k!r}]", v) for k, v in value.items()}
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ConfigurationError(f"{field} must be text, got {type(value).__name__} {value!r}.")


def _mask_proxy_credentials(hook: S3Hook) -> None:
    """Proxy URLs in the connection's ``config_kwargs`` may carry a password: mask it, check the URL."""
    proxies = getattr(hook.conn_config.botocore_config, "proxies", None) or {}
    for scheme, url in proxies.items():
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"The {scheme} proxy in connection {hook.aws_conn_id!r} (config_kwargs.proxies) must be an "
                "http(s)://[user:password@]host:port URL."
            )
        if parts.password:
            mask_secret(parts.password)


class S3BackupBaseOperator(BaseOperator):
    """Base of every task here: where the backup lives and how its objects are written.

    The store is built lazily from ``S3Hook`` and the ``aws`` connection.

    Encryption, ACL and part size apply to every object written (segments, manifests,
    offset maps). The SSE-C key is read at run time from the Airflow Variable named by
    ``sse_customer_key_variable`` (a secrets backend works too) and masked in logs; the
    key itself is never an argument, so it never reaches rendered templates.

    ``object_lock_mode`` (``GOVERNANCE`` or ``COMPLIANCE``) with ``object_lock_retention_days``
    retains every object written for that many days from its write (S3 Object Lock); the
    bucket must have Object Lock enabled, which :meth:`check_bucket` checks before anything
    is written.

    ``s3_retry_backoff_ms`` sets the base of botocore's exponential backoff between S3
    retries (``None``: botocore's own); the connection's retry mode must be ``standard``
    or ``adaptive`` (see :mod:`airflow_kafka_backup.engine.storage.s3_retry`).
    """

    s3_template_fields: tuple[str, ...] = (
        "bucket", "prefix", "aws_conn_id", "sse_algorithm", "sse_kms_key_id", "sse_customer_key_variable", "acl",
        "part_size", "expect_continue", "object_lock_mode", "object_lock_retention_days",
        "s3_retry_backoff_ms",
    )
    #: Template fields holding names, by shape; each is text after rendering (see
    #: :meth:`_do_render_template_fields`). A subclass's fields count when it templates them.
    text_fields: ClassVar[dict[str, str]] = {
        "bucket": NAME, "prefix": NAME, "aws_conn_id": NAME, "sse_kms_key_id": NAME,
        "sse_customer_key_variable": NAME, "kafka_conn_id": NAME, "topics": NAMES, "exclude_topics": NAMES,
        "topic_mapping": NAME_MAPPING, "incarnations": NAME_MAPPING, "group_mapping": NAME_MAPPING,
        "consumer_groups": NAMES_OR_BOOL,
    }

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "kafka-backup",
        aws_conn_id: str | None = "aws_default",
        sse_algorithm: str | None = None,
        sse_kms_key_id: str | None = None,
        sse_customer_key_variable: str | None = None,
        acl: str | None = None,
        part_size: int | str = DEFAULT_PART_SIZE,
        expect_continue: bool | str = True,
        object_lock_mode: str | None = None,
        object_lock_retention_days: int | str | None = None,
        s3_retry_backoff_ms: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_retry_backoff_ms = s3_retry_backoff_ms
        if not is_template(s3_retry_backoff_ms):
            validate_retry_backoff_ms(s3_retry_backoff_ms)  # when the DAG is parsed
        self.object_lock_mode = object_lock_mode
        self.object_lock_retention_days = object_lock_retention_days
        self.expect_continue = expect_continue
        self.bucket = bucket
        self.prefix = prefix
        if not is_template(prefix):
            clean_prefix(prefix)  # when the DAG is parsed
        self.aws_conn_id = aws_conn_id
        self.sse_algorithm = sse_algorithm
        self.sse_kms_key_id = sse_kms_key_id
        self.sse_customer_key_variable = sse_customer_key_variable
        self.acl = acl
        self.part_size = part_size
        if not any(map(is_template, (sse_algorithm, sse_kms_key_id, acl, part_size, sse_customer_key_variable,
                                     object_lock_mode, object_lock_retention_days))):
            # Fail when the DAG is parsed, not when it runs.
            self._s3_write_settings(PLACEHOLDER_CUSTOMER_KEY if sse_customer_key_variable else None)

    def _do_render_template_fields(self, parent: Any, template_fields: Iterable[str], context: Context,
                                   jinja_env: jinja2.Environment, seen_oids: set[int]) -> None:
        """Render, then make every name field text (:func:`as_text`).

        A native render reads the text ``"2024.10"`` as the float 2024.1 and ``"0x10"`` as the int
        16: a name field that was text and came out a number is rendered again as plain text, so
        it keeps exactly the characters typed. Overridden here, not in ``render_template_fields``,
        because a mapped task's operator is rendered through this method only.
        """
        template_fields = tuple(template_fields)
        names = [f for f in template_fields if f in self.text_fields] if parent is self else []
        raw = {f: getattr(self, f, None) for f in names}
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        for field in names:
            value = getattr(self, field, None)
            if isinstance(raw[field], str) and isinstance(value, int | float) and not isinstance(value, bool):
                value = render_template_to_string(jinja_env.from_string(raw[field]), context)
            setattr(self, field, as_text(field, value, self.text_fields[field]))

    @property
    def key_prefix(self) -> str:
        """The rendered ``prefix`` as every key under it is built (see ``settings.clean_prefix``)."""
        return clean_prefix(self.prefix)

    def _s3_write_settings(self, customer_key: str | None) -> S3WriteSettings:
        return S3WriteSettings.create(
            sse_algorithm=self.sse_algorithm, sse_kms_key_id=self.sse_kms_key_id, sse_customer_key=customer_key,
            acl=self.acl, part_size=self.part_size, object_lock_mode=self.object_lock_mode,
            object_lock_retention_days=self.object_lock_retention_days,
        )

    @cached_property
    def s3_settings(self) -> S3WriteSettings:
        key = None
        if self.sse_customer_key_variable:
            try:
                key = Variable.get(self.sse_customer_key_variable)
            except Exception as error:  # its text is not repeated: it is the secrets backend's, not ours
                missing = getattr(getattr(error, "error", None), "error", None) == ErrorType.VARIABLE_NOT_FOUND
                raise ConfigurationError(
                    f"The Airflow Variable {self.sse_customer_key_variable!r} (sse_customer_key_variable) "
                    f"{'does not exist' if missing else f'could not be read ({type(error).__name__})'}; it must "
                    "hold the SSE-C key."
                ) from None
            mask_secret(key)
        settings = self._s3_write_settings(key)
        if settings.sse_customer_key is not None:
            mask_secret(base64.b64encode(settings.sse_customer_key).decode())
        return settings

    @cached_property
    def s3_hook(self) -> S3Hook:
        hook = S3Hook(aws_conn_id=self.aws_conn_id, extra_args=self.s3_settings.extra_args(),
                      transfer_config_args=self.s3_settings.transfer_config_args())
        _mask_proxy_credentials(hook)
        return hook

    @cached_property
    def store(self) -> S3ObjectStore:
        store = S3ObjectStore.from_s3_hook(self.s3_hook, self.bucket, read_args=self.s3_settings.read_args())
        if str(self.expect_continue).lower() == "false":
            store.disable_expect_continue()
        backoff_ms = validate_retry_backoff_ms(self.s3_retry_backoff_ms)
        if backoff_ms is not None:
            store.set_retry_backoff(backoff_ms, source=f"connection {self.aws_conn_id!r}")
        if self.s3_settings.object_lock_mode is not None:
            store.object_lock_args = self.s3_settings.object_lock_args  # a retain-until date per write
        return store

    def check_bucket(self) -> None:
        """The bucket exists and is ours; with Object Lock asked for, the bucket has it enabled."""
        self.store.check_bucket()
        if self.s3_settings.object_lock_mode is not None:
            self.store.check_object_lock()

