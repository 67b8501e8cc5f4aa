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

# Everything else is imported on first use (PEP 562), so that commands that only read
# records (report, status, compare, history) never pay for importing torch.
_LAZY = {
    "create_method": "xbench.registry", "get_method": "xbench.registry",
    "list_methods": "xbench.registry", "list_tasks": "xbench.registry",
    "load_task": "xbench.registry", "register_method": "xbench.registry",
    "register_task": "xbench.registry", "Batch": "xbench.methods.base",
    "Method": "xbench.methods.base", "Budget": "xbench.tasks.base", "Split": "xbench.tasks.base",
    "Task": "xbench.tasks.base", "TaskInfo": "xbench.tasks.base",
    "run": "xbench.harness.session", "load_results": "xbench.analysis.records",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xbench' has no attribute {name!r}")


__all__ = [
    "Batch", "Budget", "ExitCode", "Method", "Split", "Task", "TaskInfo", "XbenchError",
    "__version__", "create_method", "get_method", "list_methods", "list_tasks", "load_results",
    "load_task", "register_method", "register_task", "run",
]
