from pathlib import Path

import pytest

from taskfit.config import RunConfig, load_run_config
from taskfit.errors import UserError
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


def test_every_cli_flag_is_a_config_key():
    from taskfit.cli import EVAL_KEYS

    assert set(EVAL_KEYS) <= set(RunConfig.model_fields)


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
