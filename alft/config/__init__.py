"""Typed campaign configuration: YAML in ``conf/``, validated by pydantic, overridable from the CLI.

Rules
-----
* Unknown keys are errors (``extra="forbid"``); messages name the key, the file and the line.
* ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment, so
  secrets (a PostgreSQL password in ``store.url``) stay out of files.
* Relative paths are resolved against the config file's folder, except ``workdir``, whose
  default is ``runs/<name>`` under the current directory.
* ``--set key.sub=value`` overrides are applied before validation; values are YAML scalars.

Modules
-------
* ``base``: ``Strict``, the base of every model.
* ``sections``: data, model, strategy, oracle, zero-shot, tracking and store sections.
* ``trainers``: the trainer section; ``stopping``: the stop rules.
* ``campaign``: ``CampaignConfig`` and its checks across sections.
* ``loading``: ``load_config``, ``parse_overrides``, ``config_from_dict``, ``config_digest``,
  ``read_text_file``.

Import from ``alft.config``: these are the names it keeps stable.
"""

from __future__ import annotations

from alft.config.campaign import CampaignConfig
from alft.config.loading import (
    config_digest,
    config_from_dict,
    load_config,
    parse_overrides,
    read_text_file,
)
from alft.config.sections import (
    DataConfig,
    DataSource,
    ModelConfig,
    OracleConfig,
    StoreConfig,
    StrategyConfig,
    TrackingConfig,
    ZeroShotConfig,
)
from alft.config.stopping import (
    ForecastConfig,
    PlateauConfig,
    StabilizingConfig,
    StopConfig,
    TargetConfig,
    UncertaintyStopConfig,
)
from alft.config.target import TargetModelConfig
from alft.config.trainers import (
    HeadTrainerConfig,
    LoraConfig,
    SemiSupervisedConfig,
    SFTTrainerConfig,
    TrainerConfig,
    TransformerTrainerConfig,
)

__all__ = [
    "CampaignConfig",
    "DataConfig",
    "DataSource",
    "ForecastConfig",
    "HeadTrainerConfig",
    "LoraConfig",
    "ModelConfig",
    "OracleConfig",
    "PlateauConfig",
    "SemiSupervisedConfig",
    "SFTTrainerConfig",
    "StabilizingConfig",
    "StopConfig",
    "StoreConfig",
    "StrategyConfig",
    "TargetConfig",
    "TrackingConfig",
    "TargetModelConfig",
    "TrainerConfig",
    "TransformerTrainerConfig",
    "UncertaintyStopConfig",
    "ZeroShotConfig",
    "config_digest",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "read_text_file",
]
