"""Training: compose and train (pipeline), Hugging Face Trainer (trainer), train-many (plan), the composed model."""

import sys
import types
from typing import Any


class _TrainPackage(types.ModuleType):
    """This package, callable as the ``train`` function.

    ``from review_toolkit import train`` is the documented way to train; once this package is
    imported, Python binds its name ``review_toolkit.train`` to the package, and calling it
    must still train. The pipeline loads on the first call (it imports torch).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from review_toolkit.train.pipeline import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainPackage
