"""Hostile input, through the CLI as a user types it (issue 16): every case exits 2 with one line that names the file,
row or key at fault, prints no traceback, loads no model and leaves no half-made run folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskfit.cli import main

TASK = """name: mini
dataset: mini
eval_split: dev
fields: {text: text}
labels: [{value: neg}, {value: pos}]
prompt: {input_template: "Text: {text}"}
"""


def task_file(tmp: Path, text: str = TASK, name: str = "task.yaml", encoding: str = "utf-8") -> str:
    (tmp / name).write_bytes(text.encode(encoding))
    return str(tmp / name)


def data_dir(tmp: Path, content: bytes | str | None = None, rows: list | None = None, split: str = "dev") -> str:
    folder = tmp / "data" / "mini"
    folder.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        content = "".join(json.dumps(r) + "\n" for r in rows)
    if content is not None:
        (folder / f"{split}.jsonl").write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(tmp / "data")


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))  # a binary file given as data
GOOD_ROWS = [{"text": "fine", "label": "pos"}, {"text": "awful", "label": "neg"}]


def mini(tmp: Path, *extra: str, task: str = TASK, rows: list | None = None) -> list[str]:
    """An eval of the mini task on good rows (unless given), plus ``extra`` flags."""
    return ["eval", "--task", task_file(tmp, task), "--data-dir", data_dir(tmp, rows=rows or GOOD_ROWS), *extra]


def tune_file(tmp: Path, content: bytes, name: str = "train.jsonl") -> list[str]:
    (tmp / name).write_bytes(content)
    return ["tune", "--train-file", str(tmp / name), "--output", str(tmp / "tuned")]


def run_folder(tmp: Path, results: str | None, samples: str = "") -> str:
    folder = tmp / "someone"
    folder.mkdir()
    if results is not None:
        (folder / "results.json").write_text(results)
    (folder / "samples.jsonl").write_text(samples)
    return str(folder)


def unwritable_dir(tmp: Path) -> str:
    return "/proc/taskfit-cannot-write-here"


def file_as_output(tmp: Path) -> str:
    (tmp / "afile").write_text("x")
    return str(tmp / "afile")


CASES = {
    # --- the task: name, path, YAML
    "unknown task": (lambda t: ["eval", "--task", "nope"], "unknown task 'nope'"),
    "task is a directory": (lambda t: ["eval", "--task", str(t)], "is a directory; give a task YAML file"),
    "task file missing": (lambda t: ["eval", "--task", str(t / "missing.yaml")], "config file not found"),
    "task YAML not YAML": (lambda t: ["eval", "--task", task_file(t, "name: [x,\n")], "not valid YAML"),
    "task YAML Latin-1": (lambda t: ["eval", "--task", task_file(t, TASK.replace("neg", "négatif"),
                                                                 encoding="latin-1")],
                          "task.yaml:5: not UTF-8 text (byte 0xe9)"),
    "task YAML a list": (lambda t: ["eval", "--task", task_file(t, "- a\n- b\n")], "expected a YAML mapping"),
    "task YAML unknown key": (lambda t: ["eval", "--task", task_file(t, TASK + "lables: []\n")],
                              "unknown key 'lables'"),
    "task YAML no template": (lambda t: ["eval", "--task", task_file(t, TASK.replace(
        'prompt: {input_template: "Text: {text}"}', "prompt: {}"))], "missing required key 'prompt.input_template'"),
    "template {0}": (lambda t: ["eval", "--task", task_file(t, TASK.replace("{text}", "{0}"))],
                     "is not a valid template"),
    "template unknown field": (lambda t: ["eval", "--task", task_file(t, TASK.replace("Text: {text}", "{body}"))],
                               "uses {body}, which is not in fields"),
    "template unclosed brace": (lambda t: ["eval", "--task", task_file(t, TASK.replace("{text}", "{text"))],
                                "is not a valid template"),
    "unknown task type": (lambda t: ["eval", "--task", task_file(t, TASK + "type: sorting\n")],
                          "key 'type' has invalid value 'sorting'"),
    "demo label unknown": (lambda t: ["eval", "--task", task_file(t, TASK + "demos: [{fields: {text: a}, "
                                                                            "label: maybe}]\n")],
                           "demos[0].label 'maybe' is not one of"),
    "label_map to unknown label": (lambda t: ["eval", "--task", task_file(t, TASK + 'label_map: {"1": good}\n')],
                                   "label_map"),
    "score_range reversed": (lambda t: ["eval", "--task", task_file(t, TASK.replace("name: mini", "name: mini\ntype: "
                             "regression").replace("labels: [{value: neg}, {value: pos}]\n", "") +
                             "score_range: [5, 0]\n")], "score_range must be [low, high]"),
    "no data source": (lambda t: ["eval", "--task", task_file(t, TASK.replace("dataset: mini\n", ""))],
                       "a task needs a data source"),
    "null key in task": (lambda t: ["eval", "--task", task_file(t, TASK.replace("eval_split: dev", "eval_split: "))],
                         "key 'eval_split' is empty (null)"),
    "YAML yes as a label word": (lambda t: ["eval", "--task", task_file(t, TASK.replace(
        "{value: pos}", "{value: pos, verbalizer: yes}"))], 'quote the value, e.g. "yes"'),
    "YAML off as a label": (lambda t: ["eval", "--task", task_file(t, TASK.replace("{value: neg}", "{value: off}"))],
                            "as a boolean, not text"),
    # --- the data
    "binary data file": (lambda t: ["eval", "--task", task_file(t), "--data-dir",
                                    data_dir(t, PNG)], "dev.jsonl:1: not UTF-8 text"),
    "data line not JSON": (lambda t: ["eval", "--task", task_file(t), "--data-dir",
                                      data_dir(t, '{"text": "a", "label": "pos"}\n{text: b}\n')],
                           "dev.jsonl:2: not valid JSON"),
    "data line a list": (lambda t: ["eval", "--task", task_file(t), "--data-dir", data_dir(t, "[1, 2]\n")],
                         "dev.jsonl:1: expected a JSON object"),
    "empty data file": (lambda t: ["eval", "--task", task_file(t), "--data-dir", data_dir(t, "")],
                        "dev.jsonl has no rows"),
    "row missing field": (lambda t: mini(t, rows=[{"txt": "a", "label": "pos"}]),
                          "row 1: missing field 'text'"),
    "row null field": (lambda t: mini(t, rows=[{"text": None, "label": "pos"}]), "row 1: field 'text'"),
    "row label unknown": (lambda t: mini(t, rows=[{"text": "a", "label": "meh"}]), "row 1"),
    "dataset folder missing": (lambda t: ["eval", "--task", task_file(t), "--data-dir", str(t)],
                               "data file not found"),
    "split missing": (lambda t: mini(t, "--split", "test"), "test.jsonl not found; splits in"),
    "data file unsupported type": (lambda t: ["eval", "--task", task_file(t, TASK.replace(
        "dataset: mini", "data_files: {dev: rows.txt}"))], "data file not found"),
    "csv data not UTF-8": (lambda t: ((t / "rows.csv").write_bytes("text,label\nbébé,pos\n".encode("latin-1")),
                                      ["eval", "--task", task_file(t, TASK.replace(
                                          "dataset: mini", "data_files: {dev: rows.csv}"))])[1],
                           "rows.csv: not UTF-8 text"),
    "kb file missing": (lambda t: ["eval", "--task", "nlpcc_kbqa", "--kb", str(t / "kb.jsonl"), "--data-dir",
                                   str(t)], "not found"),
    # --- the run config
    "config file missing": (lambda t: ["eval", "--config", str(t / "run.yaml")], "config file not found"),
    "config unknown key": (lambda t: ["eval", "--config", task_file(t, "task: demo\nlimt: 3\n", "run.yaml")],
                           "unknown key 'limt'; allowed keys:"),
    "config wrong type": (lambda t: ["eval", "--config", task_file(t, "task: demo\nlimit: lots\n", "run.yaml")],
                          "key 'limit' has invalid value 'lots'"),
    "config a list": (lambda t: ["eval", "--config", task_file(t, "- task\n", "run.yaml")],
                      "expected a YAML mapping"),
    "config no task": (lambda t: ["eval", "--config", task_file(t, "limit: 3\n", "run.yaml")], "no task given"),
    "limit zero": (lambda t: ["eval", "--task", "demo", "--limit", "0"], "--limit 0: Input should be greater than 0"),
    "limit negative": (lambda t: ["eval", "--task", "demo", "--limit", "-3"],
                       "--limit -3: Input should be greater than 0"),
    "unknown strategy": (lambda t: ["eval", "--task", "demo", "--strategy", "tot"], "unknown strategy"),
    "strategy-arg without =": (lambda t: ["eval", "--task", "demo", "--strategy-arg", "k4"],
                               "must look like KEY=VALUE"),
    "strategy-arg unknown key": (lambda t: ["eval", "--task", "demo", "--strategy", "few_shot", "--strategy-arg",
                                            "kk=3"], "strategy_args of few_shot: unknown key 'kk'"),
    "strategy-arg bad value": (lambda t: ["eval", "--task", "demo", "--strategy", "few_shot", "--strategy-arg",
                                          "k=-1"], "key 'k' has invalid value -1"),
    "strategy-arg bad choice": (lambda t: ["eval", "--task", "demo", "--strategy", "few_shot", "--strategy-arg",
                                           "selector=best"], "key 'selector' has invalid value 'best'"),
    "adapter with openai": (lambda t: ["eval", "--task", "demo", "--backend", "openai", "--adapter", str(t)],
                            "--adapter works with the hf / llamacpp backend, not openai"),
    "quantize with openai": (lambda t: ["eval", "--task", "demo", "--backend", "openai", "--quantize", "int8"],
                             "--quantize works with the hf backend, not openai"),
    "loglikelihood on a span task": (lambda t: ["eval", "--task", "squad", "--mode", "loglikelihood", "--data-dir",
                                                "../shared/data", "--limit", "2"], "loglikelihood"),
    "unknown model": (lambda t: ["eval", "--task", "demo", "--model", "gpt-17"], "unknown model 'gpt-17'"),
    "model folder missing": (lambda t: ["eval", "--task", "demo", "--model", f"hf:{t}/nothing"],
                             "does not exist"),
    "head folder missing": (lambda t: ["eval", "--task", "sst2", "--model", f"head:{t}/nothing", "--data-dir",
                                       "../shared/data", "--limit", "2"], "nothing"),
    "cache path not SQLite": (lambda t: (((t / "c.sqlite").write_text("not a database " * 20)),
                                         ["eval", "--task", "demo", "--cache-path", str(t / "c.sqlite")])[1],
                              "is not an SQLite file"),
    "cache path a directory": (lambda t: ["eval", "--task", "demo", "--cache-path", str(t)], "is a directory"),
    "cache path unwritable": (lambda t: ["eval", "--task", "demo", "--cache-path", "/proc/taskfit/c.sqlite"],
                              "--cache-path /proc/taskfit/c.sqlite"),
    "output unwritable": (lambda t: ["eval", "--task", "demo", "--output", unwritable_dir(t)], "taskfit-cannot"),
    "output is a file": (lambda t: ["eval", "--task", "demo", "--output", file_as_output(t)], "afile"),
    # --- tune
    "tune without data": (lambda t: ["tune"], "give exactly one of --task"),
    "tune with both sources": (lambda t: ["tune", "--task", "sst2", "--mixture", str(t / "m.yaml")],
                               "give exactly one of --task"),
    "tune task rows file missing": (lambda t: ["tune", "--task", "sst2", "--train-file", str(t / "x.jsonl")],
                                    "x.jsonl not found (with --task: a JSONL file in the task's own columns"),
    "tune file missing": (lambda t: ["tune", "--train-file", str(t / "none.jsonl")], "training file not found"),
    "tune file binary": (lambda t: tune_file(t, PNG), "train.jsonl:1: not UTF-8 text"),
    "tune file bad line": (lambda t: tune_file(t, b'{"input": "a", "output": "b"}\n{"input": \n'),
                           "train.jsonl:2: not valid JSON"),
    "tune stage and method clash": (lambda t: ["tune", "--task", "sst2", "--stage", "sft", "--method", "head"],
                                    "--method head is the head stage"),
    "tune bad lr": (lambda t: ["tune", "--task", "sst2", "--lr", "-1"], "--lr -1.0: Input should be greater than 0"),
    "tune resume without checkpoint": (lambda t: ["tune", "--task", "sst2", "--resume", "--output", str(t)],
                                       "holds no run to continue"),
    "grpo batch not a multiple": (lambda t: ["align", "--method", "grpo", "--task", "demo", "--reward",
                                             "metric:accuracy", "--batch-size", "6", "--output", str(t / "g")],
                                  "not a multiple of --num-generations 4"),
    "grpo without a reward": (lambda t: ["align", "--method", "grpo", "--task", "demo", "--output", str(t / "g")],
                              "grpo needs --reward"),
    "reward weight not a number": (lambda t: ["align", "--method", "grpo", "--task", "demo", "--reward",
                                              "length:shorter*lots", "--output", str(t / "g")],
                                   "is not REWARD or REWARD*WEIGHT"),
    "rloo with a loss type": (lambda t: ["align", "--method", "rloo", "--task", "demo", "--reward", "length:shorter",
                                         "--loss-type", "dapo", "--output", str(t / "g")], "TRL's RLOO has one loss"),
    "dpo with beta 0": (lambda t: ["align", "--method", "dpo", "--data", str(t / "p.jsonl"), "--beta", "0"],
                        "needs a positive beta"),
    # --- comparing, merging, exporting
    "compare missing folder": (lambda t: ["compare-results", str(t / "a"), str(t / "b")], str(Path("a"))),
    "compare a run with itself": (lambda t: ["compare-results", run_folder(t, '{"task": {"name": "x"}}',
                                                                           '{"index": 0}\n'), str(t / "someone")],
                                  "A and B are the same run"),
    "compare broken results": (lambda t: ["compare-results", run_folder(t, "{not json"), str(t)], "results.json"),
    "merge adapter missing": (lambda t: ["merge", str(t / "adapter"), str(t / "merged")], "adapter"),
    "export not gguf": (lambda t: ["export", str(t / "model.bin")], "must end in .gguf"),
    # --- the commands whose flags come from commands.py's settings: errors name the flag
    "report volume zero": (lambda t: ["report", str(t), "--volume", "0"], "--volume 0: Input should be greater than 0"),
    "report few resamples": (lambda t: ["report", str(t), "--bootstrap-samples", "50"],
                             "--bootstrap-samples 50: Input should be greater than or equal to 100"),
    "grid ray address without ray": (lambda t: ["grid", str(t / "plan.yaml"), "--ray-address", "auto"],
                                     "--ray-address goes with --executor ray"),
    "grid no jobs": (lambda t: ["grid", str(t / "plan.yaml"), "--jobs", "0"], "--jobs 0: Input should be greater"),
    "leaderboard no resamples": (lambda t: ["feedback", "leaderboard", "--resamples", "0"], "--resamples 0:"),
    "reward eval bad limit": (lambda t: ["reward", "eval", "--reward", "length:shorter", "--data", str(t / "p.jsonl"),
                                         "--output", str(t / "r"), "--limit", "-1"], "--limit -1:"),
}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: every check must come before one."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path, capsys, no_model_loads, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # ../shared/data as the README writes it
    work = tmp_path / "w"
    work.mkdir()
    build, expected = CASES[name]
    argv = build(work)
    if argv[0] == "eval" and "--output" not in argv:
        argv = [*argv, "--output", str(tmp_path / "run")]
    code = main([*argv, *(["--no-progress"] if argv[0] in ("eval", "tune") else [])])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("taskfit: error:")]
    assert code == 2, (name, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1 and expected in lines[0], (name, err)
    assert not (tmp_path / "run").exists()  # nothing half-made


# --------------------------------------------------------------------------- every command that writes (issue 35)
def prefs(tmp: Path) -> str:
    path = tmp / "prefs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n"
                            for i in range(6)))
    return str(path)


def plan(tmp: Path, out: str) -> str:
    path = tmp / "plan.yaml"
    path.write_text(json.dumps({"tasks": ["demo"], "strategies": ["zero_shot"], "output": out}))
    return str(path)


# command -> (argv with the output path, whether the output is a file, its suffix)
WRITERS = {
    "eval": (lambda t, o: ["eval", "--task", "demo", "--output", o], False, ""),
    "tune": (lambda t, o: ["tune", "--task", "sst2", "--data-dir", "../shared/data", "--output", o], False, ""),
    "tune head": (lambda t, o: ["tune", "--method", "head", "--task", "sst2", "--output", o], False, ""),
    "reward train": (lambda t, o: ["reward", "train", "--method", "minilm", "--data", prefs(t), "--output", o],
                     False, ""),
    "reward eval": (lambda t, o: ["reward", "eval", "--reward", "length:shorter", "--data", prefs(t), "--output", o],
                    False, ""),
    "reward score": (lambda t, o: ["reward", "score", "--reward", "length:shorter", "--data", prefs(t),
                                   "--output", o], True, ".jsonl"),
    "align dpo": (lambda t, o: ["align", "--method", "dpo", "--data", prefs(t), "--output", o], False, ""),
    "align raft": (lambda t, o: ["align", "--method", "raft", "--reward", "length:shorter", "--data", prefs(t),
                                 "--output", o], False, ""),
    "align eval": (lambda t, o: ["align", "eval", "--policies", "base", "--reward", "length:shorter", "--data",
                                 prefs(t), "--output", o], False, ""),
    "merge": (lambda t, o: ["merge", str(t / "no-adapter"), o], False, ""),
    "export": (lambda t, o: ["export", o], True, ".gguf"),
    "report html": (lambda t, o: ["report", str(t / "no-run"), "--html", o], True, ".html"),
    "report md": (lambda t, o: ["report", str(t / "no-run"), "--md", o], True, ".md"),
    "grid": (lambda t, o: ["grid", plan(t, o)], False, ""),
    "fit": (lambda t, o: ["fit", "sst2", "--data-dir", "../shared/data", "--output", o], False, ""),
    "feedback export": (lambda t, o: ["feedback", "export", "--as", "dpo", "--db", str(t / "no.sqlite"),
                                      "--output", o], True, ".jsonl"),
    "serve db": (lambda t, o: ["serve", "--db", o], True, ".sqlite"),
    "loop": (lambda t, o: ["loop", "--db", str(t / "no.sqlite"), "--task", "sst2", "--output", o], False, ""),
}


def other_run(tmp: Path, suffix: str) -> Path:
    """A finished eval run's folder (for a file output: a folder where the file should be)."""
    folder = tmp / f"other{suffix}"
    folder.mkdir()
    (folder / "run.json").write_text('{"fingerprint": "someone else"}\n')
    (folder / "samples.jsonl").write_text('{"index": 0}\n')
    (folder / "run_card.json").write_text("{}\n")
    return folder


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def nothing_loads(no_model_loads, monkeypatch):
    """No model of any backend may load (serve's default backend is llama.cpp)."""
    import taskfit.serve.assistant

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was refused")

    monkeypatch.setattr(taskfit.serve.assistant, "load_backend", refuse)


@pytest.mark.parametrize("problem", ["unwritable", "under a file", "another run"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_every_command_that_writes_refuses_a_bad_output_before_any_work(command, problem, tmp_path, capsys,
                                                                        nothing_loads, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path / "home"))
    work = tmp_path / "w"
    work.mkdir()
    build, is_file, suffix = WRITERS[command]
    if problem == "unwritable":
        out = f"/proc/taskfit-cannot-write/out{suffix}"
    elif problem == "under a file":
        (work / "afile").write_text("x")
        out = str(work / "afile" / f"out{suffix}")
    else:
        out = str(other_run(work, suffix))
    argv = build(work, out)
    before = snapshot(work)
    code = main(argv)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("taskfit: error:")]
    assert code == 2, (command, problem, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert Path(out).name in lines[0] or "afile" in lines[0], lines[0]
    assert snapshot(work) == before  # nothing half-written, nothing overwritten
