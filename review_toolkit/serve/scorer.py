"""The model side of serving: count a request's tokens, score a batch of reviews.

Scoring goes through ``Classifier.predict_proba``, the path ``predict`` and evaluation use, so a
served score is the score the run was measured with. Uncalibrated scores (``raw_scores``) come
from the same forward pass: calibration is applied to them afterwards, as the classifier does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from review_toolkit.accel.gpu_scoring import QueuedWork

# Characters per token where a backbone has no tokenizer to count with (featurizer backbones).
CHARACTERS_PER_TOKEN = 4


@dataclass(frozen=True)
class ScoredReviews:
    """Calibrated and uncalibrated P(fake) of reviews, in input order."""

    p_fake: np.ndarray
    raw_p_fake: np.ndarray

    def __len__(self) -> int:
        return len(self.p_fake)

    def slice(self, start: int, stop: int) -> "ScoredReviews":
        return ScoredReviews(self.p_fake[start:stop], self.raw_p_fake[start:stop])


def scores_on_gpu(classifier: Any) -> bool:
    """Whether ``classifier`` (or any member of an ensemble) embeds with a torch encoder on a CUDA device."""
    for member in getattr(classifier, "members", None) or [classifier]:
        parameters = getattr(getattr(member, "encoder", None), "parameters", None)
        if callable(parameters):
            first = next(iter(parameters()), None)
            if first is not None and first.device.type == "cuda":
                return True
    return False


class ReviewScorer:
    """A loaded classifier, seen by the batcher: token counts and blocking batch scoring."""

    def __init__(self, classifier: Any, *, batch_size: int = 64):
        self.classifier = classifier
        self.batch_size = batch_size
        self.max_length = int(classifier.max_length)
        self.threshold = float(classifier.threshold)
        # A GPU computes one batch while the host answers the last and queues the next; on a CPU,
        # one batch uses every core and a second would only share them.
        self.batches_in_flight = 2 if scores_on_gpu(classifier) else 1

    def tokenize(self, texts: list[str]) -> tuple[list[int], list[list[int]] | None]:
        """Tokens each review costs once truncated as in training, and the ids themselves, which
        ``score`` then reuses; a character estimate and no ids where the classifier has no
        tokenizer of its own (featurizer backbones, ensembles of several tokenizers)."""
        token_ids = getattr(self.classifier, "token_ids", None)
        ids = token_ids(texts) if token_ids is not None else None
        if ids is None:
            return [min(self.max_length, 1 + len(text) // CHARACTERS_PER_TOKEN) for text in texts], None
        return [len(row) for row in ids], ids

    def portable_token_ids(self) -> dict[str, Any] | None:
        """How another process tokenizes as ``tokenize`` does, without the model (None: it cannot)."""
        portable = getattr(self.classifier, "portable_token_ids", None)
        return portable() if portable is not None else None

    def warm_up(self, reviews: list[str], gpu_streams: int = 1) -> None:
        """Score ``reviews`` once (first-pass allocations) and record the GPU graphs small batches
        replay, on each of ``gpu_streams`` streams, so that no client's request waits for either."""
        self.score(reviews)
        record = getattr(self.classifier, "record_scoring_graphs", None)
        if record is not None:
            record(gpu_streams)

    def score(self, texts: list[str], token_ids: list[list[int]] | None = None) -> ScoredReviews:
        """Blocking: run it in a worker thread, never on the event loop."""
        extra = {} if token_ids is None else {"token_ids": token_ids}
        return self._scored(len(texts), self.classifier.predict_proba(texts, batch_size=self.batch_size, calibrated=False, **extra))

    def queue(self, texts: list[str], token_ids: list[list[int]] | None) -> QueuedWork | None:
        """``score`` in steps, where the first costs the calling thread (the event loop) well under
        a millisecond: the batch's work is queued on the GPU now (``Classifier.queue_proba``);
        ``wait()`` for the GPU in a worker thread, then ``result()`` applies the head and
        calibration. None where the batch cannot be queued so cheaply: ``score`` it in a worker
        thread.

        A worker thread that queues the GPU's work shares the interpreter's lock with the event loop
        answering requests, and took several times as long to queue it as the loop does alone
        (benchmarks/README.md, "Serving load"): the GPU waited for it."""
        queue_proba = getattr(self.classifier, "queue_proba", None)
        if queue_proba is None or token_ids is None:
            return None
        raw = queue_proba(texts, token_ids=token_ids, calibrated=False)
        if raw is None:
            return None
        return raw.then(lambda raw_scores: self._scored(len(texts), raw_scores))

    def _scored(self, reviews: int, raw_scores: Any) -> ScoredReviews:
        raw = np.asarray(raw_scores, dtype=np.float64)
        calibrated = np.asarray(self.classifier.calibration.apply(raw), dtype=np.float64)
        if raw.shape != (reviews,) or not np.all(np.isfinite(calibrated)):
            raise ValueError(f"the classifier returned {raw.shape} scores (finite: {np.isfinite(calibrated).all()}) for {reviews} reviews")
        return ScoredReviews(calibrated, raw)

    def label_for(self, p_fake: float) -> str:
        return self.classifier.labels_for([p_fake])[0]
