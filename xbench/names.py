"""Names that end up in file names: suites, methods, tasks, protocols.

A name must be letters, digits and ``_ . + -`` (starting with a letter or a
digit, at most 128 characters), so that it can never leave the folder the user
chose (``../``, ``/``), hide a file (a leading dot) or smuggle markup into a
file name. :func:`safe_filename` turns any other text (e.g. read from a record)
into such a name.
"""

from __future__ import annotations

import re

from xbench.errors import ConfigError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def is_safe_name(value: object) -> bool:
    """True for a string that may be used as (part of) a file name as it is."""
    return isinstance(value, str) and bool(_SAFE.fullmatch(value)) and ".." not in value


def check_name(value: object, what: str, error: type[Exception] = ConfigError) -> str:
    """Return ``value`` if :func:`is_safe_name`, else raise ``error`` naming ``what``."""
    if not is_safe_name(value):
        raise error(f"{what} {value!r} is not a valid name: use letters, digits and _ . + - "
                    f"only, starting with a letter or digit (it becomes part of file names)")
    return value  # type: ignore[return-value]


def safe_filename(text: object) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.+-]`` replaced by ``_``, no ``..``,
    no leading dot, never empty."""
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(text))
    name = re.sub(r"\.{2,}", "_", name).lstrip(".")
    return name[:128] or "_"
