"""Moved to ``review_toolkit.plugin_api.fitted``; this path keeps working for one release."""

import warnings

from review_toolkit.plugin_api.fitted import *  # noqa: F401,F403

warnings.warn(
    "review_toolkit.fitted moved to review_toolkit.plugin_api (import from review_toolkit.plugin_api)",
    DeprecationWarning,
    stacklevel=2,
)
