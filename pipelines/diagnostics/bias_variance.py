"""Bias/variance verdicts from train, validation and test error (notes 000, "Overfitting & Underfitting";
notes 001, regularization; notes 004, dropout and early stopping).

Avoidable bias is ``train_error - reference_error`` (how far training falls short of the error one can hope for);
variance is ``val_error - train_error`` (how much worse the model does on data it did not fit). Each is "high" above
a tolerance. Errors are classification error (1 - accuracy) or, for regression, RMSE in target units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: The notes' remedies, by diagnosis.
REMEDIES: dict[str, tuple[str, ...]] = {
    "high_variance": (
        "more training data",
        "data augmentation",
        "noise injection (inputs or weights)",
        "L1/L2 (elastic net) regularization",
        "dropout",
        "early stopping",
        "ensembling",
    ),
    "high_bias": (
        "a bigger model (more layers or units)",
        "train longer",
        "less regularization (lower strength, less dropout)",
    ),
}


@dataclass(frozen=True)
class Diagnosis:
    """The verdict and the numbers behind it.

    Attributes:
        verdict: ``good``, ``high_bias``, ``high_variance`` or ``high_bias_and_variance``.
        avoidable_bias: train error minus reference error.
        variance: validation error minus train error (the generalisation gap).
        test_gap: test error minus validation error (how far validation-based choices carried over).
        remedies: the notes' remedies for the verdict (empty when good).
    """

    verdict: str
    train_error: float
    val_error: float
    test_error: float
    reference_error: float
    avoidable_bias: float
    variance: float
    test_gap: float
    tolerance: float
    remedies: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        """The fields as a plain dict (``remedies`` as a list), for JSON."""
        out = asdict(self)
        out["remedies"] = list(self.remedies)
        return out


def verdict(
    train_error: float, val_error: float, test_error: float, reference_error: float = 0.0, tolerance: float = 0.02
) -> Diagnosis:
    """Classify a model as high bias, high variance, both, or good.

    Args:
        train_error, val_error, test_error: errors on each split (same units: error rate or RMSE).
        reference_error: human-level or Bayes error estimate for the task.
        tolerance: largest gap still counted as small: a bias or variance of exactly ``tolerance`` is not high
            (the comparison is ``gap > tolerance``).

    Raises:
        ValueError: a negative error or tolerance.
    """
    for name, value in (
        ("train_error", train_error),
        ("val_error", val_error),
        ("test_error", test_error),
        ("reference_error", reference_error),
        ("tolerance", tolerance),
    ):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
    bias = train_error - reference_error
    variance = val_error - train_error
    high_bias, high_variance = bias > tolerance, variance > tolerance
    if high_bias and high_variance:
        verdict = "high_bias_and_variance"
        remedies = REMEDIES["high_bias"] + REMEDIES["high_variance"]
    elif high_bias:
        verdict, remedies = "high_bias", REMEDIES["high_bias"]
    elif high_variance:
        verdict, remedies = "high_variance", REMEDIES["high_variance"]
    else:
        verdict, remedies = "good", ()
    return Diagnosis(
        verdict,
        train_error,
        val_error,
        test_error,
        reference_error,
        bias,
        variance,
        test_error - val_error,
        tolerance,
        remedies,
    )
