"""The settings of every command, written once.

Each command's settings are a pydantic model composed of sections by concern, one module per command or family:
:mod:`.run` (``eval``: task, strategy, model, each backend's options, output), :mod:`.tune`, :mod:`.synth`,
:mod:`.preference` (``reward train``, ``align``, ``loop``), :mod:`.serve`, and :mod:`.commands` (the commands that
read run folders, files or the assistant's database); :mod:`.training` holds the sections the training stages share
and :mod:`.common` what all of them share. The same models validate YAML configs and build the CLI's flags
(:mod:`taskfit.cli.flags`: name, type, default, help, one flag group per section), so every option is a flag and a
YAML key with one help text.
"""

from taskfit.settings.commands import (
    CompareSettings,
    ExportSettings,
    FeedbackExportSettings,
    FitSettings,
    GridSettings,
    LeaderboardSettings,
    MergeSettings,
    ReportSettings,
    RewardEvalSettings,
    RewardScoreSettings,
)
from taskfit.settings.common import command_line, merged, operational_keys, positional, run_identity
from taskfit.settings.preference import (
    ALIGN_SECTIONS,
    LOOP_SECTIONS,
    REWARD_SECTIONS,
    AlignConfig,
    LoopConfig,
    RewardConfig,
    load_align_config,
    load_loop_config,
    load_reward_config,
)
from taskfit.settings.run import (
    RUN_SECTIONS,
    BackendChoice,
    ModelSection,
    OutputSection,
    PromptOverride,
    RunConfig,
    TaskSection,
    backend_sections,
    eval_command,
    load_run_config,
)
from taskfit.settings.serve import SERVE_SECTIONS, ServeConfig, ServeHTTPSection, load_serve_config
from taskfit.settings.synth import SYNTH_SECTIONS, SynthConfig, load_synth_config
from taskfit.settings.tune import (
    TUNE_SECTIONS,
    MixtureSpec,
    MixtureTask,
    MixtureTemplate,
    TuneConfig,
    load_tune_config,
)

__all__ = [
    "ALIGN_SECTIONS", "LOOP_SECTIONS", "REWARD_SECTIONS", "RUN_SECTIONS", "SERVE_SECTIONS", "SYNTH_SECTIONS",
    "TUNE_SECTIONS", "AlignConfig", "BackendChoice", "CompareSettings", "ExportSettings", "FeedbackExportSettings",
    "FitSettings", "GridSettings", "LeaderboardSettings", "LoopConfig", "MergeSettings", "MixtureSpec", "MixtureTask",
    "MixtureTemplate", "ModelSection", "OutputSection", "PromptOverride", "ReportSettings", "RewardConfig",
    "RewardEvalSettings", "RewardScoreSettings", "RunConfig", "ServeConfig", "ServeHTTPSection", "SynthConfig",
    "TaskSection", "TuneConfig", "backend_sections", "command_line", "eval_command", "load_align_config",
    "load_loop_config", "load_reward_config", "load_run_config", "load_serve_config", "load_synth_config",
    "load_tune_config", "merged", "operational_keys", "positional", "run_identity",
]
