"""The served model's bundle (plain data: JSON, a weights-only ``state_dict``, the tokenizer's own file), its
content hash, and logging it to MLflow as a pyfunc "model from code" (:mod:`pipelines.serving.model`)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.data.encoding import RawInput, load_raw_input, raw_input_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from torch import nn

log = logging.getLogger("deepnotes.serving")

SERVING_JSON, WEIGHTS = "serving.json", "weights.pt"
#: Bumped when the bundle's layout changes; :meth:`Bundle.read` refuses other versions.
FORMAT_VERSION = 1
#: The tag (on the run, its logged model and each registered version) holding :func:`weights_digest`.
WEIGHTS_TAG = "weights_sha256"


class BundleError(ValueError):
    """A bundle folder is incomplete or of another format version; the message names the file."""


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 (hex) of a ``state_dict``'s content: every entry's name, dtype, shape and bytes, in name order. Equal
    weights give an equal digest whatever the process, run or file they come from; any changed value changes it."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Bundle:
    """A trained network with what it needs to answer raw requests.

    Attributes:
        architecture: registry name (:mod:`models.registry`), e.g. ``"mlp"``.
        spec: :class:`~models.registry.NetworkSpec` fields.
        model_params: the experiment's ``model:`` block.
        task: task registry name (:mod:`pipelines.tasks`); ``task_meta`` the ``meta.json`` fields it reads.
        raw_input: the raw-input encoder (:mod:`pipelines.data.encoding`).
        network: the network, in eval mode, on the CPU.
    """

    architecture: str
    spec: dict[str, Any]
    model_params: dict[str, Any]
    task: str
    task_meta: dict[str, Any]
    raw_input: RawInput
    network: nn.Module

    @classmethod
    def from_module(cls, module, meta: dict[str, Any], prepared: Path) -> Bundle:
        """The bundle of a trained :class:`~pipelines.training.module.SupervisedModule` (its hyperparameters and
        network) on the prepared dataset in ``prepared`` (``meta`` its ``meta.json``)."""
        hp = module.hparams
        return cls(
            architecture=hp["architecture"],
            spec=dict(hp["spec"], input_shape=list(hp["spec"]["input_shape"])),
            model_params=dict(hp["model_params"]),
            task=hp["task"],
            task_meta=dict(hp["task_meta"]),
            raw_input=raw_input_for(meta, prepared),
            network=module.network.cpu().eval(),
        )

    @property
    def digest(self) -> str:
        """:func:`weights_digest` of the network."""
        return weights_digest(self.network.state_dict())

    def write(self, folder: Path) -> Path:
        """Write ``serving.json``, ``weights.pt`` and the raw input's files into the new folder ``folder``."""
        import torch

        folder.mkdir(parents=True)
        description = {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "spec": self.spec,
            "model_params": self.model_params,
            "task": self.task,
            "task_meta": self.task_meta,
            "raw_input": self.raw_input.to_json(),
            WEIGHTS_TAG: self.digest,
        }
        (folder / SERVING_JSON).write_text(json.dumps(description, indent=2, sort_keys=True))
        buffer = io.BytesIO()
        torch.save(self.network.state_dict(), buffer)
        (folder / WEIGHTS).write_bytes(buffer.getvalue())
        for name, path in self.raw_input.files.items():
            shutil.copyfile(path, folder / name)
        return folder

    @classmethod
    def read(cls, folder: Path) -> Bundle:
        """Rebuild a bundle from :meth:`write`'s folder. Loading is weights-only: ``weights.pt`` goes through
        torch's restricted unpickler (tensors and containers only), so a tampered file runs no code.

        Raises:
            BundleError: ``serving.json`` is missing, unreadable or of another format version.
            pickle.UnpicklingError: ``weights.pt`` holds anything but tensors (torch's ``weights_only`` refusal).
        """
        import torch

        from models.registry import NetworkSpec, build_network

        path = folder / SERVING_JSON
        try:
            description = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable serving description ({exc})") from None
        if description.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{path}: format_version {description.get('format_version')!r}; expected {FORMAT_VERSION}"
            )
        spec = dict(description["spec"], input_shape=tuple(description["spec"]["input_shape"]))
        from pipelines.tasks import get_task

        network = get_task(description["task"])(description["task_meta"]).wrap_network(
            build_network(description["architecture"], NetworkSpec(**spec), description["model_params"])
        )
        network.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
        return cls(
            architecture=description["architecture"],
            spec=description["spec"],
            model_params=description["model_params"],
            task=description["task"],
            task_meta=description["task_meta"],
            raw_input=load_raw_input(description["raw_input"], folder),
            network=network.eval(),
        )

    def predict(self, raw: Any) -> pd.DataFrame | dict[str, Any]:
        """Raw samples -> the task's answer (:meth:`~pipelines.tasks.base.Task.serve`): a DataFrame with one row
        per sample, or (when a column holds an array per sample, e.g. a reconstruction) ``{column: list}``.

        Raises:
            pipelines.data.encoding.RawInputError: the raw input does not fit (naming the column or shape).
        """
        import pandas as pd
        import torch

        from pipelines.tasks import get_task
        from pipelines.training.inference import predict

        x = torch.as_tensor(self.raw_input.encode(raw))
        columns = get_task(self.task)(self.task_meta).serve(predict(self.network, x))
        if all(np.ndim(values) == 1 for values in columns.values()):
            return pd.DataFrame(columns)
        return {name: np.asarray(values).tolist() for name, values in columns.items()}


@dataclass(frozen=True)
class LoggedModel:
    """What :func:`log_served_model` logged: ``model_uri`` (``models:/m-<id>``) and the weights' digest."""

    model_uri: str
    weights_sha256: str


def log_served_model(bundle: Bundle, example_x: np.ndarray, run_id: str, pip_requirements: list[str]) -> LoggedModel:
    """Log ``bundle`` to run ``run_id`` as an MLflow pyfunc named ``model`` (through the process-wide tracking URI).

    Its signature describes raw input (:meth:`RawInput.schema`) and the task's answer; its ``input_example`` is the
    raw form of the prepared samples ``example_x`` (``(n, *input_shape)``). The logged model and the run are tagged
    ``weights_sha256`` (:func:`weights_digest`).
    """
    import mlflow
    from mlflow.models import infer_signature

    from pipelines.serving import model as model_code

    example = bundle.raw_input.example(example_x)
    output = bundle.predict(example)
    signature = infer_signature(model_output=output)
    signature.inputs = bundle.raw_input.schema()
    digest = bundle.digest
    with tempfile.TemporaryDirectory(prefix="deepnotes-bundle-") as tmp:
        folder = bundle.write(Path(tmp) / "bundle")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model_code.__file__,
                artifacts={"bundle": str(folder)},
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements,
                tags={WEIGHTS_TAG: digest},
            )
    return LoggedModel(info.model_uri, digest)
