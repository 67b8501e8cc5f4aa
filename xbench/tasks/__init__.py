"""Built-in tasks. Importing this package registers them."""

from xbench.tasks.base import Budget, Split, Task, TaskInfo
from xbench.tasks import digits  # noqa: F401  (registers digits_*)
from xbench.tasks import syndigits  # noqa: F401  (registers digits_syn2real)
from xbench.tasks import mnist1d  # noqa: F401  (registers mnist1d_shift)
from xbench.tasks import shapes  # noqa: F401  (registers shapes_*)

__all__ = ["Budget", "Split", "Task", "TaskInfo"]
