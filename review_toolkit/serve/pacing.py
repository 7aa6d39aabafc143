"""How long the scorer takes over a batch, learned from the batches it has scored.

The batcher closes a batch just before the scorer is free for it (``batcher.DynamicBatcher``): a
batch closed earlier than that waits in the scorer's queue without taking the requests that arrive
meanwhile, and one closed later leaves a GPU idle. So it needs to know when the batches handed to
the scorer will be done, which follows from their token counts: a batch's service time (from when
the scorer starts on it, or from its hand-over if the scorer was idle, to its scores) is about a
fixed cost plus a cost per token. ``ServiceTimes`` fits those two by least squares, weighting
recent batches most, so it follows a machine whose load changes.
"""

from __future__ import annotations

#: Weight of the newest batch in the running means: about the last 50 batches count.
NEWEST_WEIGHT = 0.02


class ServiceTimes:
    """Predicts a batch's service time in seconds from its token count."""

    def __init__(self, newest_weight: float = NEWEST_WEIGHT):
        if not 0 < newest_weight <= 1:
            raise ValueError(f"newest_weight must be in (0, 1], not {newest_weight}")
        self.newest_weight = newest_weight
        self.batches = 0
        # Running means of tokens, seconds, tokens squared and tokens x seconds.
        self._tokens = self._seconds = self._tokens_squared = self._tokens_seconds = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        """Record that a batch of ``tokens`` tokens took ``seconds``."""
        self.batches += 1
        # Plain means over the first batches, so the earliest ones do not weigh as a prior of zero.
        weight = max(self.newest_weight, 1 / self.batches)
        self._tokens += weight * (tokens - self._tokens)
        self._seconds += weight * (seconds - self._seconds)
        self._tokens_squared += weight * (tokens * tokens - self._tokens_squared)
        self._tokens_seconds += weight * (tokens * seconds - self._tokens_seconds)

    def predict(self, tokens: int) -> float:
        """Expected seconds for a batch of ``tokens`` tokens; 0 before any batch was observed."""
        if not self.batches:
            return 0.0
        variance = self._tokens_squared - self._tokens**2
        if variance <= (0.01 * self._tokens) ** 2:  # batches of one size so far: no slope to fit
            return self._seconds
        per_token = max(0.0, (self._tokens_seconds - self._tokens * self._seconds) / variance)
        fixed = max(0.0, self._seconds - per_token * self._tokens)
        return fixed + per_token * tokens
