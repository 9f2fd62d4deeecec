"""One exception tree; driver, HTTP and process errors are translated where they
enter (the original chained) so the loop handles categories, not libraries."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error this package raises on purpose."""


class SettingsError(OrchestratorError):
    """A setting is missing or invalid. The message is one line naming the variable,
    the value and what is accepted; the CLI exits with code 2."""


class StoreError(OrchestratorError):
    """The state store could not be read or written (connection lost, timeout,
    unexpected answer). The cycle treats what it could not read as unknown."""


class LeaseLost(StoreError):
    """This orchestrator no longer leads: its lease moved to another holder or
    expired (by the database clock), or the cycle outlived the time the lease was
    granted for. The database refuses its writes (SQLSTATE `GOL01`); the cycle
    stops at once and touches no pod."""


class DatabaseRefused(StoreError):
    """The database answered, and refused us for good: wrong password, unknown
    role or database. Waiting never heals it, so `run` exits 1 instead of retrying."""


class SchemaMissing(StoreError):
    """The database lacks our functions, or an older version of them: it was not
    migrated (`gpu-orchestrator migrate`; over REST, `migrate --print-sql`)."""


class ProviderError(OrchestratorError):
    """The GPU provider refused or failed a request."""


class CapacityError(ProviderError):
    """The provider has no capacity for the requested offering right now."""


class RequestRejected(ProviderError):
    """The provider says our request is wrong (422, or 400 that is not capacity).
    Never retried: stop spawning and alert."""


class BalanceError(ProviderError):
    """The account cannot pay (402): stop spawning and alert."""


class OfferingForbidden(ProviderError):
    """This offering is not allowed for the account (403): skip it."""


class RateLimited(ProviderError):
    """Too many requests (429); `retry_after` seconds to wait, when the provider said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """A 5xx or a timeout: retried with backoff. A create that ended this way may
    still have created the pod, so it is looked up by name before deciding."""
