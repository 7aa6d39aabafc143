"""Review data: reading files, checking them, mapping labels and splitting."""

from review_toolkit.data.loading import (
    DEFAULT_SEED,
    LABEL_NAMES,
    ReviewSplits,
    default_data_path,
    load_reviews,
    load_splits,
    load_splits_for,
    parse_label_map,
    read_table,
    split_reviews,
)

__all__ = [
    "DEFAULT_SEED", "LABEL_NAMES", "ReviewSplits", "default_data_path", "load_reviews", "load_splits",
    "load_splits_for", "parse_label_map", "read_table", "split_reviews",
]
