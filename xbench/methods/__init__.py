"""Built-in methods, one family per module. Importing this package registers them."""

from xbench.methods.base import Batch, Method
from xbench.methods import erm  # noqa: F401  (registers erm)

__all__ = ["Batch", "Method"]
