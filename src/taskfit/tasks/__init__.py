"""Tasks: a data source, prompt fields, an answer parser and metrics, defined in YAML."""

from taskfit.tasks.task import Example, Task, TaskConfig, list_tasks, load_task

__all__ = ["Example", "Task", "TaskConfig", "list_tasks", "load_task"]
