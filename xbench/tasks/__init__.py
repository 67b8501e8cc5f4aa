"""Built-in tasks. Importing this package registers them."""

from xbench.tasks.base import Budget, Split, Task, TaskInfo
from xbench.tasks import digits  # noqa: F401  (registers digits_*)

__all__ = ["Budget", "Split", "Task", "TaskInfo"]
