"""Tasks: a data source, prompt fields, an answer parser and metrics, defined in YAML."""

from taskfit.api import Example
from taskfit.tasks.schema import TaskConfig
from taskfit.tasks.task import Task, list_tasks, load_task

__all__ = ["Example", "Task", "TaskConfig", "list_tasks", "load_task"]
