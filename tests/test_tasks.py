import json
from pathlib import Path

import pytest

from taskfit.errors import UserError
from taskfit.tasks import list_tasks, load_task

MINI = """
name: mini
dataset: mini
fields: {text: sentence}
label_map: {"0": neg, "1": pos}
labels:
  - {value: neg}
  - {value: pos}
prompt:
  input_template: "Text: {text}"
"""


@pytest.fixture
def mini_task(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(MINI, encoding="utf-8")
    return load_task(str(path))


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_builtin_tasks_are_listed_and_valid():
    tasks = list_tasks()
    assert {"sst2", "demo"} <= set(tasks)
    assert [label.value for label in tasks["sst2"].labels] == ["negative", "positive"]


def test_demo_task_ships_balanced_bilingual_data():
    examples = load_task("demo").examples()
    assert len(examples) == 80
    golds = [e.gold for e in examples]
    assert golds.count("positive") == golds.count("negative") == 40
    chinese = [e for e in examples if any("\u4e00" <= ch <= "\u9fff" for ch in e.fields["text"])]
    assert len(chinese) == 40
    assert len({e.fields["text"] for e in examples}) == 80  # no duplicates


def test_data_dir_layout_and_label_map(tmp_path, mini_task):
    write_jsonl(tmp_path / "data" / "mini" / "dev.jsonl",
                [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}])
    examples = mini_task.examples("dev", tmp_path / "data")
    assert [(e.index, e.fields["text"], e.gold) for e in examples] == [(0, "good", "pos"), (1, "bad", "neg")]
    assert len(mini_task.examples("dev", tmp_path / "data", limit=1)) == 1


def test_sst2_reads_shared_layout(shared_data):
    examples = load_task("sst2").examples("dev", shared_data, limit=5)
    first = json.loads((shared_data / "sst2" / "dev.jsonl").read_text().splitlines()[0])
    assert examples[0].fields["text"] == first["text"] and examples[0].gold == first["label"]


def test_missing_data_file_names_path(tmp_path, mini_task):
    with pytest.raises(UserError, match=r"data file not found: .*mini/test\.jsonl"):
        mini_task.examples("test", tmp_path)


def test_row_missing_field_names_row_and_field(tmp_path, mini_task):
    write_jsonl(tmp_path / "mini" / "dev.jsonl", [{"sentence": "ok", "label": 1}, {"text": "oops", "label": 0}])
    with pytest.raises(UserError, match=r"dev\.jsonl row 2: missing field 'sentence'"):
        mini_task.examples("dev", tmp_path)


def test_unknown_label_value_names_row(tmp_path, mini_task):
    write_jsonl(tmp_path / "mini" / "dev.jsonl", [{"sentence": "ok", "label": 7}])
    with pytest.raises(UserError, match=r"row 1: label 7 is not one of \['neg', 'pos'\]"):
        mini_task.examples("dev", tmp_path)


def test_bad_json_line_names_line(tmp_path, mini_task):
    path = tmp_path / "mini" / "dev.jsonl"
    path.parent.mkdir()
    path.write_text('{"sentence": "ok", "label": 1}\n{broken\n')
    with pytest.raises(UserError, match=r"dev\.jsonl:2: not valid JSON"):
        mini_task.examples("dev", tmp_path)


def test_csv_and_parquet_sources(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"sentence": ["fine", "awful"], "label": ["pos", "neg"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        task_yaml = MINI.replace("dataset: mini", f"data_files: {{dev: {name}}}")
        path = tmp_path / f"task_{name}.yaml"
        path.write_text(task_yaml)
        examples = load_task(str(path)).examples("dev")
        assert [(e.fields["text"], e.gold) for e in examples] == [("fine", "pos"), ("awful", "neg")]


def test_unknown_task_lists_builtins():
    with pytest.raises(UserError, match=r"unknown task 'nope'.*demo.*sst2"):
        load_task("nope")


def test_demos_written_in_the_task_yaml(tmp_path):
    text = MINI + """demos:
  - {fields: {text: "loved it"}, label: pos, rationale: "loving is positive"}
  - {fields: {text: "hated it"}, label: neg}
"""
    path = tmp_path / "mini.yaml"
    path.write_text(text)
    demos = load_task(str(path)).examples("demos")
    assert [(d.fields["text"], d.gold, d.rationale) for d in demos] == [
        ("loved it", "pos", "loving is positive"), ("hated it", "neg", None)]
    path.write_text(text.replace("label: neg}", "label: meh}"))
    with pytest.raises(UserError, match=r"demos\[1\]\.label 'meh'"):
        load_task(str(path))


def test_taskfit_data_dir_is_the_default_data_dir(tmp_path, monkeypatch):
    """A task with a dataset folder reads $TASKFIT_DATA_DIR when no --data-dir is given; a task with its own data
    files (demo) is not affected."""
    import json as _json

    from taskfit.tasks import load_task

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.jsonl").write_text(_json.dumps({"text": "fine", "label": "positive"}) + "\n")
    monkeypatch.setenv("TASKFIT_DATA_DIR", str(tmp_path))
    (example,) = load_task("sst2").examples("dev")
    assert example.fields["text"] == "fine"
    assert len(load_task("demo").examples()) == 80
