from pathlib import Path

import pytest

from taskfit.errors import UserError
from taskfit.settings import RunConfig, TuneConfig, load_run_config, load_serve_config, load_tune_config
from taskfit.tasks import load_task


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_override_yaml(tmp_path):
    cfg = write(tmp_path, "run.yaml", "task: sst2\nlimit: 10\nmode: generate\nseed: 5\n")
    config = load_run_config(cfg, {"limit": 3, "seed": None, "task": None})
    assert config.limit == 3  # flag wins
    assert config.seed == 5  # flag not given: YAML value kept
    assert config.mode == "generate"
    assert config.task == "sst2"


def test_unknown_run_key_names_key_and_allowed_keys(tmp_path):
    cfg = write(tmp_path, "run.yaml", "task: sst2\nlimt: 10\n")
    with pytest.raises(UserError) as err:
        load_run_config(cfg, {})
    message = str(err.value)
    assert str(cfg) in message and "'limt'" in message
    assert "limit" in message and "mode" in message  # allowed keys are listed


def test_wrong_type_names_key_and_value(tmp_path):
    cfg = write(tmp_path, "run.yaml", "task: sst2\nlimit: lots\n")
    with pytest.raises(UserError, match=r"key 'limit' has invalid value 'lots'"):
        load_run_config(cfg, {})


def test_bad_mode_lists_allowed_values(tmp_path):
    cfg = write(tmp_path, "run.yaml", "task: sst2\nmode: guess\n")
    with pytest.raises(UserError, match="loglikelihood.*generate"):
        load_run_config(cfg, {})


def test_missing_task_says_how_to_give_one():
    with pytest.raises(UserError, match="--task"):
        load_run_config(None, {})


def test_invalid_yaml_names_line(tmp_path):
    cfg = write(tmp_path, "run.yaml", "task: sst2\nlimit: [1,\n")
    with pytest.raises(UserError, match=r"run.yaml:\d+: not valid YAML"):
        load_run_config(cfg, {})


def _subparser(command):
    from taskfit.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == command)[1]


@pytest.mark.parametrize("command, model", [("eval", RunConfig), ("tune", TuneConfig)])
def test_every_setting_is_a_flag(command, model):
    dests = {action.dest for action in _subparser(command)._actions}
    for name in model.model_fields:
        assert f"setting:{name}" in dests or any(d.startswith(f"setting:{name}.") for d in dests), name


def test_flags_become_the_same_keys_a_yaml_sets(tmp_path):
    from taskfit.cli import build_parser, settings_from

    args = build_parser().parse_args([
        "eval", "--task", "sst2", "--no-cache", "--strategy", "few_shot", "--strategy-arg", "k=2",
        "--strategy-arg", "selector=knn", "--instruction", "Judge it.", "--request-timeout", "7.5",
        "--no-chat-template", "--backend", "openai"])
    cfg = write(tmp_path, "run.yaml", "task: sst2\nstrategy_args: {order: shuffled}\nprompt: {system: Be brief.}\n")
    config = load_run_config(cfg, settings_from(args))
    assert config.cache is False and config.chat_template is False and config.request_timeout == 7.5
    assert config.strategy_args == {"order": "shuffled", "k": 2, "selector": "knn"}  # merged key by key
    assert config.prompt.instruction == "Judge it." and config.prompt.system == "Be brief."
    assert config.backend_options()["request_timeout"] == 7.5 and "adapter" not in config.backend_options()


def test_tune_flags_that_used_to_be_yaml_only():
    from taskfit.cli import build_parser, settings_from

    args = build_parser().parse_args(["tune", "--task", "sst2", "--gradient-accumulation", "4", "--weight-decay",
                                      "0.1", "--target-modules", "q_proj", "--target-modules", "v_proj",
                                      "--warmup-ratio", "0.1", "--logging-steps", "2"])
    config = load_tune_config(None, settings_from(args))
    assert (config.gradient_accumulation, config.weight_decay, config.warmup_ratio, config.logging_steps) == \
        (4, 0.1, 0.1, 2)
    assert config.target_modules == ["q_proj", "v_proj"]


def test_bad_strategy_args_are_refused_before_any_model_loads():
    with pytest.raises(UserError, match=r"strategy_args of few_shot: unknown key 'kk'.*\bk\b"):
        load_run_config(None, {"task": "sst2", "strategy": "few_shot", "strategy_args": {"kk": 3}})
    with pytest.raises(UserError, match=r"unknown strategy; available: zero_shot, few_shot"):
        load_run_config(None, {"task": "sst2", "strategy": "tree_of_thought"})


def test_an_option_of_another_backend_is_refused():
    with pytest.raises(UserError, match=r"--adapter works with the hf / llamacpp backend, not openai; a remote"):
        load_run_config(None, {"task": "sst2", "backend": "openai", "adapter": "runs/lora"})
    with pytest.raises(UserError, match=r"--concurrency works with the llamacpp / openai backend, not hf"):
        load_run_config(None, {"task": "sst2", "backend": "hf", "concurrency": 4})
    with pytest.raises(UserError, match=r"--quantize works with the hf backend, not llamacpp; the llamacpp"):
        load_serve_config(None, {"backend": "llamacpp", "quantize": "int8"})
    assert load_run_config(None, {"task": "sst2", "backend": "llamacpp", "adapter": "runs/lora"}).adapter
    with pytest.raises(UserError, match=r"--arena-adapter needs a backend that takes adapters, not openai"):
        load_serve_config(None, {"backend": "openai", "arena_adapter": ["runs/lora"]})


def test_registries_and_their_declared_options_agree():
    from taskfit.models.registry import BUILT_IN, backend_class, options_of
    from taskfit.prompting.options import STRATEGY_OPTIONS
    from taskfit.prompting.strategies import STRATEGIES

    assert {name: cls.Options for name, cls in STRATEGIES.items()} == STRATEGY_OPTIONS
    for name in BUILT_IN:
        assert backend_class(name).Options is options_of(name)


TASK_YAML = """
name: mini
dataset: mini
fields: {text: sentence}
labels:
  - {value: neg}
  - {value: pos}
prompt:
  input_template: "Text: {text}"
"""


def test_nested_unknown_task_key_lists_allowed(tmp_path):
    path = write(tmp_path, "mini.yaml", TASK_YAML.replace("input_template", "instrction: x\n  input_template"))
    with pytest.raises(UserError) as err:
        load_task(str(path))
    assert "prompt.instrction" in str(err.value)
    assert "answer_prefix" in str(err.value) and "input_template" in str(err.value)


def test_template_field_must_be_mapped(tmp_path):
    path = write(tmp_path, "mini.yaml", TASK_YAML.replace("Text: {text}", "Text: {sentence}"))
    with pytest.raises(UserError, match=r"\{sentence\}.*not in fields \['text'\]"):
        load_task(str(path))


def test_label_map_must_target_known_labels(tmp_path):
    path = write(tmp_path, "mini.yaml", TASK_YAML + 'label_map: {"1": positive}\n')
    with pytest.raises(UserError, match="unknown labels"):
        load_task(str(path))


def test_a_field_with_its_own_flag_is_named_by_that_flag_in_errors_and_commands():
    from pydantic import ValidationError

    from taskfit.settings import FeedbackExportSettings
    from taskfit.settings.common import command_line
    from taskfit.strict import COMMAND_LINE, describe_error

    with pytest.raises(ValidationError) as caught:
        FeedbackExportSettings(format="csv", output=Path("out.jsonl"))
    assert describe_error(caught.value, FeedbackExportSettings, COMMAND_LINE).startswith("--as 'csv': ")
    line = command_line("feedback export", FeedbackExportSettings, {"format": "kto", "output": "out.jsonl"})
    assert "--as kto" in line and "--format" not in line
