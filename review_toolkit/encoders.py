"""Moved to ``review_toolkit.plugin_api.encoders``; this path keeps working for one release."""

import warnings

from review_toolkit.plugin_api.encoders import *  # noqa: F401,F403

warnings.warn(
    "review_toolkit.encoders moved to review_toolkit.plugin_api (import from review_toolkit.plugin_api)",
    DeprecationWarning,
    stacklevel=2,
)
