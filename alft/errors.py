"""Domain errors. Each message names the problem, where it is, and the numbers involved."""

from __future__ import annotations

from collections.abc import Iterator


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or during (``__cause__``, else ``__context__``), outermost first."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # a cycle is possible (re-raised in a handler)
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


class AlftError(Exception):
    """Base of every error alft reports to a user (the CLI prints it and exits 2)."""


class ConfigError(AlftError):
    """A campaign config is malformed, has unknown keys, or values out of range."""


class DataError(AlftError):
    """Pool or eval data is missing, unreadable, or fails a schema check."""


class ModelError(AlftError):
    """A model folder or hub id cannot be loaded."""


class StoreError(AlftError):
    """The campaign store cannot be opened or is in a state alft cannot continue from."""


class CampaignMismatchError(StoreError):
    """The store holds a campaign of this name whose data or settings differ from the config."""


class LabelError(AlftError):
    """A label is unknown, for an example not awaiting one, or otherwise not acceptable."""


class TrainerError(AlftError):
    """Fine-tuning cannot run on what was given (too few labels, bad options)."""


class TrackingError(AlftError):
    """MLflow could not be reached or refused a write (the campaign store is unaffected)."""


class CampaignBusyError(StoreError):
    """Another live process runs this campaign (its run lease is held: ``alft.leases``)."""


class OrchestratorError(AlftError):
    """The Prefect API could not be reached or refused a call (the campaign store is unaffected)."""
