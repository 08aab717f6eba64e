"""The numpy reference backend: the portable kernels on ``array_api_compat.numpy``.

It is registered through the ``sketchcore.backends`` entry point like every other backend (no
private shortcut), and it is the template a third-party backend starts from.
"""

from __future__ import annotations

import sys

from .backend import Backend
from .hookspecs import hookimpl

__all__ = ["NumpyBackend"]


class NumpyBackend(Backend):
    name = "numpy"
    array_module = "numpy"
    priority = 0
    description = "reference kernels on numpy (array API)"

    def namespace(self):
        import array_api_compat.numpy as xp

        return xp

    def owns(self, x) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(x, (np.ndarray, np.generic))


@hookimpl
def sketchcore_register_backends(register):
    register(NumpyBackend())
