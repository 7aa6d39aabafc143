"""Review data: reading files (one table of formats), mapping labels, splitting, and messages.

* :mod:`~review_toolkit.data.formats`: the formats table and the readers every command uses.
* :mod:`~review_toolkit.data.streams`: reviews to score, chunk by chunk (``predict``).
* :mod:`~review_toolkit.data.labels`: fake / real, label aliases and ``--label-map``.
* :mod:`~review_toolkit.data.splits`: train / validation / test splits, the leakage check.
* :mod:`~review_toolkit.data.reviews`: labelled reviews from a file, and their splits.
* :mod:`~review_toolkit.data.messages`: rows, lines and values as messages name them.
"""

from review_toolkit.data.formats import FORMATS, read_table, supported_formats
from review_toolkit.data.labels import FAKE, LABEL_ALIASES, LABEL_NAMES, REAL, normalise_labels, parse_label_map
from review_toolkit.data.reviews import default_data_path, load_reviews, load_splits, load_splits_for, split_seed_of
from review_toolkit.data.splits import DEFAULT_SEED, LeakageWarning, ReviewSplits, split_reviews

__all__ = [
    "DEFAULT_SEED", "FAKE", "FORMATS", "LABEL_ALIASES", "LABEL_NAMES", "LeakageWarning", "REAL", "ReviewSplits",
    "default_data_path", "load_reviews", "load_splits", "load_splits_for", "normalise_labels", "parse_label_map",
    "read_table", "split_reviews", "split_seed_of", "supported_formats",
]
