"""xbench: a benchmark harness and leaderboard for cross-domain learning.

Public API::

    import xbench
    xbench.list_methods("dann*")          # registered methods (fnmatch, natural sort)
    xbench.create_method("erm", lr=1e-3)  # a method instance
    xbench.list_tasks()                   # registered tasks
    xbench.load_task("digits_rotated")    # a task instance
    xbench.run("quick", out="runs/quick") # run a suite, append records
    xbench.load_results("runs/quick")     # records as a pandas DataFrame
"""

__version__ = "0.1.0"

from xbench.errors import ExitCode, XbenchError  # noqa: E402
from xbench.registry import (  # noqa: E402
    create_method, get_method, list_methods, list_tasks, load_task, register_method,
    register_task)
from xbench.methods.base import Batch, Method  # noqa: E402
from xbench.tasks.base import Budget, Split, Task, TaskInfo  # noqa: E402
from xbench.harness.session import run  # noqa: E402
from xbench.analysis.records import load_results  # noqa: E402

__all__ = [
    "Batch", "Budget", "ExitCode", "Method", "Split", "Task", "TaskInfo", "XbenchError",
    "__version__", "create_method", "get_method", "list_methods", "list_tasks", "load_results",
    "load_task", "register_method", "register_task", "run",
]
