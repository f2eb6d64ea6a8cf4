"""Warnings calix issues when it has to make a choice the user did not state.

Each is a subclass of :class:`CalixWarning` (a ``UserWarning``), so a user can silence or
escalate them all at once (``warnings.simplefilter("error", CalixWarning)``) or one kind.
"""

from __future__ import annotations

__all__ = ["CalixWarning", "DefaultFillWarning", "IntervalFloorWarning",
           "ProbabilityOutputWarning"]


class CalixWarning(UserWarning):
    """Base class of calix's warnings."""


class DefaultFillWarning(CalixWarning):
    """Removed tabular features are replaced by 0 because no fill and no background data were
    given: right only for standardised data."""


class ProbabilityOutputWarning(CalixWarning):
    """A model's outputs were recognised as probabilities (rows in [0, 1] summing to 1) and
    are treated as such, not as logits."""


class IntervalFloorWarning(CalixWarning):
    """An adaptive Shapley estimate was asked for intervals narrower than the model's outputs
    resolve for some inputs (their rounding alone is wider): it stops once only such inputs
    are left above the target, instead of spending its budget on them."""
