"""One base error, subclasses by cause.  Messages say what was expected and what was found."""


class TagusError(Exception):
    """Base of every error Tagus raises on purpose."""


class ContractError(TagusError, ValueError):
    """A message does not match its contract (malformed bytes, unknown type, bad field).

    A ValueError too, so msgspec reports it as a ValidationError when raised while decoding.
    """


class TransientError(TagusError):
    """A failure that may pass on retry (server down, timeout).  The runner naks with backoff."""


class TenantConfigError(TagusError):
    """A tenant's configuration (mapping, sensor list, token file) is missing or invalid."""


class NotFoundError(TagusError):
    """Something named by the caller does not exist."""


class ForbiddenError(TagusError):
    """The caller may not see or do this (wrong tenant, bad key)."""


class SetupError(TagusError):
    """The local installation lacks something (Java, the QuestDB jar, a binary)."""
