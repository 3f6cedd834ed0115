"""The CLI's contract: tables on stdout, exit code 2 with one clear line for bad input."""

import json
import subprocess
import sys

import pytest

from taskfit.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_and_models_list(capsys):
    code, out, _ = run_cli(capsys, "tasks")
    assert code == 0 and "sst2" in out and "demo" in out
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "smollm2-135m-instruct" in out and "hf:" in out


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "demo", "--model", "gpt-17"], "unknown model 'gpt-17'"),
        (["--task", "sst2", "--data-dir", "/nonexistent", "--split", "dev"],
         "data file not found: /nonexistent/sst2/dev.jsonl"),
        (["--task", "demo", "--model", "hf:/no/such/folder"], "model folder /no/such/folder does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, pattern):
    code, _, err = run_cli(capsys, "eval", "--output", str(tmp_path / "run"), "--no-progress", *argv)
    lines = [line for line in err.splitlines() if line.startswith("taskfit: error:")]
    assert code == 2
    assert len(lines) == 1 and pattern in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_bad_config_key_exits_2(capsys, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("task: demo\nbatchsize: 4\n")
    code, _, err = run_cli(capsys, "eval", "--config", str(cfg))
    assert code == 2 and "unknown key 'batchsize'" in err and "batch_size" in err


def test_console_script_reports_error_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", "--task", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("taskfit: error: unknown task 'nope'")
    assert "Traceback" not in proc.stderr


def test_hub_id_without_network_says_so(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--task", "demo", "--model", "hf:HuggingFaceTB/no-such-model-xyz",
                           "--output", str(tmp_path / "r"))
    assert code == 2
    assert "could not be fetched from the Hugging Face Hub" in err and "no network" in err


@pytest.mark.slow
def test_eval_demo_end_to_end_through_cli(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "eval", "--task", "demo", "--limit", "8", "--output", str(tmp_path / "run"),
                           "--bootstrap-samples", "50", "--no-progress")
    assert code == 0
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| demo")]
    assert [row[:4] for row in rows] == [["demo", "zero_shot", "loglikelihood", "accuracy"],
                                         ["demo", "zero_shot", "loglikelihood", "macro_f1"]]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["counts"]["n"] == 8


def test_verbose_after_the_subcommand_and_log_level_variable(capsys, monkeypatch):
    from taskfit.cli import build_parser

    assert build_parser().parse_args(["eval", "--task", "demo", "-v"]).verbose is True
    assert build_parser().parse_args(["-v", "tasks"]).verbose is True
    assert build_parser().parse_args(["tasks"]).verbose is False
    monkeypatch.setenv("TASKFIT_LOG_LEVEL", "loud")
    code, _, err = run_cli(capsys, "tasks")
    assert code == 2 and "TASKFIT_LOG_LEVEL=LOUD is not a level" in err


def test_recorded_command_rebuilds_the_same_config():
    """results.json's `command` is the run's config as flags: parsed back, it gives the same settings."""
    import shlex

    from taskfit.cli import build_parser, settings_from
    from taskfit.settings import RunConfig, command_line, load_run_config

    config = RunConfig(task="sst2", data_dir="../shared/data", strategy="few_shot",
                       strategy_args={"k": 2, "selector": "knn"}, prompt={"system": "Be 'brief'"}, limit=20,
                       chat_template=False, output="runs/x y", sample="random", seed=7)
    words = shlex.split(command_line("eval", RunConfig, config.model_dump()))
    assert words[:2] == ["taskfit", "eval"]
    args = build_parser().parse_args(words[1:])
    rebuilt = load_run_config(None, settings_from(args))
    assert rebuilt.model_dump() == config.model_dump()
