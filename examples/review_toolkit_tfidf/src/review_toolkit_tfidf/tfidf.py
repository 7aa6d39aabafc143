"""tfidf: word and character n-gram TF-IDF vectors, fitted on the training split. No transformer at all.

The classical baseline: on the 6,000-review Salminen et al. subset, TF-IDF with
the toolkit's ``logreg`` head reaches about 0.91 macro F1 in seconds on a CPU.

It is a ``FeaturizerBackbone``: the toolkit calls ``fit_featurizer`` on the
training texts only, embeds every split with the fitted featurizer, and stores
it in the run's ``featurizer/`` directory as plain data (the vocabulary as
JSON, the IDF weights as safetensors), so ``load_run`` rebuilds exactly the
same vectors without unpickling anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from review_toolkit.errors import PluginError
from review_toolkit.plugin_api import FeaturizerBackbone

FORMAT = "review_toolkit_tfidf/1"
VOCABULARY_FILE = "tfidf.json"
IDF_FILE = "tfidf.safetensors"

# Settings that shape the vectors and must be identical at training and at serving time;
# they are written next to the vocabulary, so a later release with other defaults still
# reproduces an old run.
SHARED = {"lowercase": True, "sublinear_tf": True, "norm": "l2", "use_idf": True, "smooth_idf": True, "strip_accents": None}
PARTS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "ngram_range": [1, 2], "token_pattern": r"(?u)\b\w\w+\b", **SHARED},
    "char": {"analyzer": "char_wb", "ngram_range": [1, 4], **SHARED},
}
# Only used while fitting: the vocabulary is kept, these are not needed to transform.
MAX_FEATURES_PER_PART = 5000  # 10,000 dimensions: dense float32 vectors stay at 40 kB a review
MIN_DOCUMENT_FREQUENCY = 2  # a term seen in one training review only is noise (1 for tiny data)


def _vectorizer(params: dict[str, Any], **extra: Any) -> TfidfVectorizer:
    options = {key: value for key, value in params.items()}
    options["ngram_range"] = tuple(options["ngram_range"])
    return TfidfVectorizer(**options, **extra)


class TfidfFeaturizer:
    """Word and character TF-IDF blocks side by side, each L2-normalised per review."""

    def __init__(self, parts: dict[str, tuple[dict[str, Any], TfidfVectorizer]]):
        self.parts = parts
        self.embedding_size = sum(len(vectorizer.vocabulary_) for _, vectorizer in parts.values())

    @classmethod
    def fit(cls, texts: list[str]) -> "TfidfFeaturizer":
        if not texts:
            raise PluginError("The tfidf backbone needs at least one training text to fit its vocabulary.")
        min_df = MIN_DOCUMENT_FREQUENCY if len(texts) >= 50 else 1
        parts = {}
        for name, params in PARTS.items():
            vectorizer = _vectorizer(params, min_df=min_df, max_features=MAX_FEATURES_PER_PART, dtype=np.float64)
            try:
                vectorizer.fit(texts)
            except ValueError as error:  # e.g. "empty vocabulary": every text is blank or one character
                raise PluginError(f"The tfidf backbone could not fit its {name} vocabulary: {error}") from error
            parts[name] = (params, vectorizer)
        return cls(parts)

    def transform(self, texts: list[str]) -> np.ndarray:
        blocks = [vectorizer.transform(texts).toarray() for _, vectorizer in self.parts.values()]
        return np.hstack(blocks).astype(np.float32)

    def save(self, directory: Path) -> None:
        description = {"format": FORMAT, "parts": []}
        arrays = {}
        for name, (params, vectorizer) in self.parts.items():
            terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
            description["parts"].append({"name": name, "params": params, "terms": terms})
            arrays[f"{name}.idf"] = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64)
        (Path(directory) / VOCABULARY_FILE).write_text(json.dumps(description, ensure_ascii=False), encoding="utf-8")
        save_file(arrays, str(Path(directory) / IDF_FILE))

    @classmethod
    def load(cls, directory: Path) -> "TfidfFeaturizer":
        directory = Path(directory)
        try:
            description = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
            arrays = load_file(str(directory / IDF_FILE))
        except (OSError, ValueError) as error:
            raise PluginError(f"Cannot read the tfidf featurizer in {directory}: {error}") from error
        if description.get("format") != FORMAT:
            raise PluginError(
                f"{directory / VOCABULARY_FILE} has format {description.get('format')!r}; this version of "
                f"review-toolkit-tfidf reads {FORMAT!r}. Install the version that trained the run."
            )
        parts = {}
        for part in description["parts"]:
            params = part["params"]
            vectorizer = _vectorizer(params, vocabulary={term: i for i, term in enumerate(part["terms"])})
            vectorizer.idf_ = arrays[f"{part['name']}.idf"]
            parts[part["name"]] = (params, vectorizer)
        return cls(parts)


class TfidfBackbone(FeaturizerBackbone):
    description = "Word 1-2-gram + character 1-4-gram TF-IDF fitted on the training split: no transformer, the classical baseline."
    default_checkpoint = ""

    def resolve_checkpoint(self, checkpoint: str | None) -> str:
        if checkpoint:
            raise PluginError(
                f"The tfidf backbone is fitted on your training data and loads no checkpoint; drop --model {checkpoint}."
            )
        return ""

    def fit_featurizer(self, texts: list[str], *, checkpoint: str, seed: int | None = None) -> TfidfFeaturizer:
        return TfidfFeaturizer.fit(list(texts))

    def load_featurizer(self, directory: Path, *, checkpoint: str) -> TfidfFeaturizer:
        return TfidfFeaturizer.load(directory)
