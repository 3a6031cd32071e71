"""Deployment parameters that name a campaign by its config file.

A schedule (or a button in the Prefect UI) cannot carry a whole ``CampaignConfig`` well:
it should point at the campaign's YAML, re-read on every run, so that editing the file
(raising the budget, say) is seen by the next scheduled run. ``CampaignRef`` is that
pointer, typed, so the Prefect UI renders it as a form and the server rejects a malformed
one before any run is created.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from alft.config import CampaignConfig

#: ``key.sub=value`` as `alft run --set` takes it (the value is a YAML scalar).
OVERRIDE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=.*$"

Override = Annotated[str, StringConstraints(pattern=OVERRIDE_PATTERN)]


class CampaignRef(BaseModel):
    """A campaign config file and `--set`-style overrides, read when the run starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_file: str = Field(
        min_length=1,
        description="campaign config (YAML); a relative path is read from the deployment's working directory",
    )
    overrides: list[Override] = Field(
        default_factory=list,
        description="overrides applied to the file, like `alft run --set`: budget=500, strategy.name=entropy",
    )

    def load(self) -> CampaignConfig:
        """The validated config (``ConfigError`` naming the file and line of a problem)."""
        from alft.config import load_config

        return load_config(self.config_file, list(self.overrides))
