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


class ProviderError(OrchestratorError):
    """The GPU provider refused or failed a request."""


class CapacityError(ProviderError):
    """The provider has no capacity for the requested offering right now."""
