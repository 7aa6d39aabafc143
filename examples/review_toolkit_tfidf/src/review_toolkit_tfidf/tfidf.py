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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from review_toolkit.errors import PluginError
from review_toolkit.plugin_api import FeaturizerBackbone, PluginOption

FORMAT = "review_toolkit_tfidf/1"
VOCABULARY_FILE = "tfidf.json"
IDF_FILE = "tfidf.safetensors"

# Settings that shape the vectors and must be identical at training and at serving time;
# they are written next to the vocabulary, so a later release with other defaults still
# reproduces an old run.
SHARED = {"lowercase": True, "sublinear_tf": True, "norm": "l2", "use_idf": True, "smooth_idf": True, "strip_accents": None}
PARTS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "token_pattern": r"(?u)\b\w\w+\b", **SHARED},
    "char": {"analyzer": "char_wb", **SHARED},
}


def _ngram_range(value: tuple[int, ...]) -> str | None:
    if len(value) != 2 or not 1 <= value[0] <= value[1]:
        return "must be two sizes LOW,HIGH with 1 <= LOW <= HIGH"
    return None


# What users may change (--backbone-option NAME=VALUE). Only max_features and min_df act at fitting
# time alone; the n-gram ranges are stored with the vocabulary, so a run reloads as it was trained.
OPTIONS = (
    PluginOption(
        "max_features", int, 5000,
        "Terms kept per part (word, character); vectors are twice as wide (dense float32, 4 bytes a term).",
        minimum=1,
    ),
    PluginOption("word_ngrams", tuple[int, ...], (1, 2), "Word n-gram sizes LOW,HIGH.", check=_ngram_range),
    PluginOption("char_ngrams", tuple[int, ...], (1, 4), "Character n-gram sizes LOW,HIGH (within words).", check=_ngram_range),
    PluginOption(
        "min_df", int, 2, "Training reviews a term must appear in (1 below 50 training reviews).", minimum=1
    ),
)


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
    def fit(cls, texts: list[str], options: Mapping[str, Any]) -> "TfidfFeaturizer":
        if not texts:
            raise PluginError("The tfidf backbone needs at least one training text to fit its vocabulary.")
        min_df = options["min_df"] if len(texts) >= 50 else 1  # a tiny dataset keeps every term
        ngrams = {"word": options["word_ngrams"], "char": options["char_ngrams"]}
        parts = {}
        for name, shared in PARTS.items():
            params = {**shared, "ngram_range": list(ngrams[name])}
            vectorizer = _vectorizer(params, min_df=min_df, max_features=options["max_features"], dtype=np.float64)
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
    declared_options = OPTIONS

    def resolve_checkpoint(self, checkpoint: str | None) -> str:
        if checkpoint:
            raise PluginError(
                f"The tfidf backbone is fitted on your training data and loads no checkpoint; drop --model {checkpoint}."
            )
        return ""

    def fit_featurizer(self, texts: list[str], *, checkpoint: str, seed: int | None = None) -> TfidfFeaturizer:
        return TfidfFeaturizer.fit(list(texts), self.options)

    def load_featurizer(self, directory: Path, *, checkpoint: str) -> TfidfFeaturizer:
        return TfidfFeaturizer.load(directory)
