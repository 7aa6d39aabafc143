"""Request and response bodies of the HTTP API (validated by pydantic, documented at /docs).

``/predict`` follows Hugging Face Text Embeddings Inference's sequence-classification route, so
its clients work unchanged: ``inputs`` is one text, a list of texts, or TEI's batch form of
one-element lists; the answer is one list of ``{label, score}`` per text, highest score first.
Text pairs (TEI's ``[a, b]`` inside a batch) mean nothing to a review classifier and are refused.
``/score`` is the toolkit's own route: P(fake), the run's threshold and the verdict per review.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _checked_texts(texts: list[str]) -> list[str]:
    if not texts:
        raise ValueError("give at least one review; the list is empty")
    for position, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"review {position} is blank; every review needs some text")
    return texts


class PredictRequest(BaseModel):
    """TEI's ``/predict`` body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": "Great product, works as described."}]})

    inputs: Union[str, list[str], list[list[str]]] = Field(
        description="A review, a list of reviews, or TEI's batch form [[review], [review], ...]."
    )
    truncate: bool | None = Field(
        default=None,
        description="Accepted for TEI compatibility. Reviews are always truncated to the run's max_length, as in training.",
    )
    raw_scores: bool = Field(
        default=False, description="Scores before the run's calibration instead of calibrated probabilities."
    )

    @field_validator("inputs")
    @classmethod
    def _inputs_are_reviews(cls, inputs: Any) -> Any:
        if isinstance(inputs, str):
            _checked_texts([inputs])
            return inputs
        if inputs and all(isinstance(item, list) for item in inputs):
            for position, item in enumerate(inputs):
                if len(item) != 1:
                    raise ValueError(
                        f"item {position} holds {len(item)} texts; each batch item must be [review] (text pairs are not supported)"
                    )
            _checked_texts([item[0] for item in inputs])
            return inputs
        _checked_texts(inputs)
        return inputs

    def texts(self) -> list[str]:
        if isinstance(self.inputs, str):
            return [self.inputs]
        return [item[0] if isinstance(item, list) else item for item in self.inputs]

    def is_single(self) -> bool:
        return isinstance(self.inputs, str)


class LabelScore(BaseModel):
    label: str = Field(examples=["fake"])
    score: float = Field(examples=[0.93])


class ScoreRequest(BaseModel):
    """The toolkit's own body: a list of reviews."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reviews": ["Great product, works as described."]}]})

    reviews: list[str] = Field(description="Reviews to score, in order; each is truncated to the run's max_length.")

    @field_validator("reviews")
    @classmethod
    def _reviews_are_texts(cls, reviews: list[str]) -> list[str]:
        return _checked_texts(reviews)


class ReviewVerdict(BaseModel):
    label: str = Field(description="'fake' when p_fake >= threshold, else 'real'.", examples=["fake"])
    p_fake: float = Field(description="Calibrated probability that the review is fake.", examples=[0.93])
    threshold: float = Field(description="The run's decision threshold on p_fake.", examples=[0.5])


class RunIdentity(BaseModel):
    name: str = Field(description="The run directory's name.")
    path: str = Field(description="Where the server loaded the run from.")
    backbone: str | None = None
    method: str | None = None
    head: str | None = None


class ScoreResponse(BaseModel):
    run: RunIdentity
    results: list[ReviewVerdict]


class ErrorResponse(BaseModel):
    """Every error, TEI's way: a message and its kind."""

    error: str = Field(examples=["inputs: give at least one review; the list is empty"])
    error_type: str = Field(examples=["Validation"])


class HealthResponse(BaseModel):
    status: str = Field(examples=["ready"])
    detail: str | None = None
