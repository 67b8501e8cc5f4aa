"""Built-in methods, one family per module. Importing this package registers them."""

from xbench.methods.base import Batch, Method
from xbench.methods import erm  # noqa: F401  (registers erm)
from xbench.methods import meta  # noqa: F401  (registers mldg, maml, reptile, protonet, finetune)
from xbench.methods import distill  # noqa: F401  (registers kd_logit, kd_scratch, kd_multi_source)
from xbench.methods import contrastive  # noqa: F401  (registers contrastive_simclr, contrastive_paired)
from xbench.methods import alignment  # noqa: F401  (registers coral, mmd)
from xbench.methods import adversarial  # noqa: F401  (registers dann, dann_cond, cdan)
from xbench.methods import invariance  # noqa: F401  (registers irm, vrex, groupdro)
from xbench.methods import mixup  # noqa: F401  (registers mixup)
from xbench.methods import adaptation  # noqa: F401  (registers mcc, self_training, ...)
from xbench.methods import test_time  # noqa: F401  (registers adabn, tent)

__all__ = ["Batch", "Method"]
