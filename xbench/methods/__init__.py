"""Built-in methods, one family per module. Importing this package registers them."""

from xbench.methods.base import Batch, Method
from xbench.methods import erm  # noqa: F401  (registers erm)
from xbench.methods import meta  # noqa: F401  (registers mldg, maml, reptile, protonet, finetune)

__all__ = ["Batch", "Method"]
