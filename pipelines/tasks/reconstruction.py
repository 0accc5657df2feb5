"""``reconstruction``: give back the input through a bottleneck (notes 002, "AUTO ENCODERS": an encoder to a
bottleneck, a decoder back, trained with an MSE or cross-entropy reconstruction loss).

The target is the input itself as pixel intensities in [0, 1] (a per-channel standardisation of the stored images is
undone first), so any image dataset serves and its labels go unused. Outputs have the input's shape
``(N, C, H, W)``, in [0, 1] (the decoder ends in a sigmoid). Losses: ``mse``, or ``bce`` (per-pixel binary
cross-entropy on the output intensities). Metrics: MSE and MAE per pixel and PSNR in dB with a data range of 1,
``10 log10(1 / MSE)`` over the whole split (torchmetrics). The bias/variance error is the per-pixel MSE.

``evaluate`` adds a grid of test originals above their reconstructions and the mean-image baseline (every test image
reconstructed as the train split's mean image): ``test_mse_mean_image`` and ``test_psnr_mean_image``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn

    from pipelines.data.catalog import DatasetEntry


class Reconstruction(Task):
    """Reconstruct image inputs; ranked by test PSNR (higher is better)."""

    name: ClassVar[str] = "reconstruction"
    description: ClassVar[str] = "the input back through a bottleneck"
    losses: ClassVar[tuple[str, ...]] = ("mse", "bce")
    metrics: ClassVar[tuple[str, ...]] = ("mse", "mae", "psnr")
    headline: ClassVar[str] = "mse"
    primary: ClassVar[str] = "psnr"
    higher_is_better: ClassVar[bool] = True
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"mse", "mae"})
    summary: ClassVar[tuple[str, ...]] = ("psnr", "mse", "mae")
    error_unit: ClassVar[str] = "per-pixel MSE"

    @classmethod
    def dataset_problem(cls, entry: DatasetEntry) -> str | None:
        if entry.modality != "image":
            return f"dataset {entry.name!r} holds {entry.modality} data; reconstruction reads images"
        return None

    def unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Stored images ``(N, C, H, W)`` -> float pixels in [0, 1] (undoes a per-channel standardisation)."""
        import torch

        from pipelines.data.prepared import CHANNEL_STANDARDIZATION

        norm = self.meta.get("normalization") or {}
        x = x.float()
        if norm.get("method") != CHANNEL_STANDARDIZATION:
            return x
        mean, std = (torch.tensor(norm[k], dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for k in ("mean", "std"))
        return x * std + mean

    def loss(self, name: str, huber_delta: float = 1.0) -> nn.Module:
        from torch import nn

        losses = {"mse": nn.MSELoss, "bce": nn.BCELoss}
        if name not in losses:
            raise ValueError(f"unknown reconstruction loss {name!r}; use one of {', '.join(self.losses)}")
        return losses[name]()

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unit_range(x)

    def metric_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unit_range(x)

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics
        from torchmetrics import image, regression

        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {"mse": regression.MeanSquaredError()}
        if full:
            metrics |= {"mae": regression.MeanAbsoluteError(), "psnr": image.PeakSignalNoiseRatio(data_range=1.0)}
        return torchmetrics.MetricCollection(metrics)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squared = (outputs.float() - self.unit_range(x)) ** 2
        return squared.flatten(1).mean(dim=1).sum()  # per-sample MSE, summed: / N is the batch's per-pixel MSE

    def error(self, metrics: dict[str, float]) -> float:
        return metrics["mse"]

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """``reconstruction``: each image ``(C, H, W)`` as 0-255 pixels (the decoder's [0, 1] output, clipped)."""
        return {"reconstruction": (outputs.float().clamp(0, 1) * 255).numpy()}

    def evaluate(self, evaluation: Evaluation, pairs: int = 16) -> None:
        """The mean-image baseline on the test split and ``predictions.png``: ``pairs`` test originals, each above
        its reconstruction, with the per-image PSNR."""
        import numpy as np
        import torch

        from pipelines import plots

        test = evaluation.splits["test"]
        train_mean = self.unit_range(torch.as_tensor(np.asarray(evaluation.data.x["train"]))).mean(dim=0, keepdim=True)
        original = self.unit_range(test.x)
        baseline = self.build_metrics()(train_mean.expand_as(original).contiguous(), original)
        evaluation.test_metrics |= {
            "mse_mean_image": float(baseline["mse"]),
            "psnr_mean_image": float(baseline["psnr"]),
        }

        chosen = np.arange(min(pairs, len(original)))
        per_image = ((test.outputs[chosen] - original[chosen]) ** 2).flatten(1).mean(dim=1)
        psnr = (10 * torch.log10(1.0 / per_image.clamp_min(1e-10))).tolist()
        columns = 8
        images, titles = [], []
        for start in range(0, len(chosen), columns):  # a row of originals, then the row of their reconstructions
            block = chosen[start : start + columns]
            images += [original[i] for i in block] + [test.outputs[i].clamp(0, 1) for i in block]
            titles += ["original"] * len(block) + [f"{psnr[i]:.1f} dB" for i in block]
        evaluation.figures["predictions.png"] = plots.image_grid_figure(
            torch.stack(images).numpy(),
            [""] * len(images),
            titles,
            [False] * len(images),
            columns=columns,
            title="Test originals (above) and their reconstructions (below, with their PSNR)",
        )


TASK = Reconstruction
