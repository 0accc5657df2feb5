"""Training that survives a kill: an end-of-epoch resume checkpoint, and resuming from it on the next run.

While ``train`` fits, :class:`ResumeCheckpoint` writes ``checkpoints/.resume/<experiment>/last.ckpt`` at the end of
every epoch (atomically: a temporary file renamed over the old one) and, beside it, ``resume.json``: the MLflow run
id, the epoch and a fingerprint of what the run trains (the stage's resolved settings and code, and the data hash).
The folder is outside the stage's DVC outputs, which DVC deletes before it reruns a stage.

The checkpoint is Lightning's full state: weights, optimizer, LR scheduler, callbacks (early stopping, the best-model
bookkeeping, the history rows, the gradient records) and loop progress. :class:`RngState` adds the RNG states
(torch, CUDA, NumPy, Python) at the epoch's end, and the training batches are shuffled by epoch number
(:class:`pipelines.data.datamodule.TensorBatches`), so the epochs after a resume see the same batches and draw the
same dropout masks as an uninterrupted run.

A rerun of a killed ``train`` stage (:func:`find_resume`) resumes when the fingerprint matches: Lightning's
``fit(ckpt_path=...)`` restarts at the next epoch, logging into the same MLflow run. A run that finished normally
removes the folder (:func:`clear_resume`), and a fingerprint that differs (changed params, code or data) starts
afresh, so a finished or changed run never resumes.

SIGTERM (a scheduler's pre-emption) makes Lightning stop at the end of the current epoch, after that epoch's resume
checkpoint is written; the stage exits with status 143 and the run is marked ``KILLED``. On SLURM, Lightning's
requeue signal is SIGUSR1 (``SLURMEnvironment(auto_requeue=True)``, its own ``hpc_ckpt``); the resume checkpoint
here needs no cluster: the requeued job's ``dvc repro`` picks it up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from pipelines.io import atomic_write_bytes, atomic_write_json
from pipelines.paths import CHECKPOINT_ROOT

log = logging.getLogger(__name__)

#: Where the resume state of every experiment lives (``<root>/<experiment>/``): not a DVC output.
RESUME_ROOT = CHECKPOINT_ROOT / ".resume"
RESUME_CHECKPOINT = "last.ckpt"
RESUME_STATE = "resume.json"


def resume_dir(name: str, root: Path = RESUME_ROOT) -> Path:
    """``<root>/<experiment>``: the resume checkpoint and state of experiment ``name``."""
    return root / name


def fingerprint(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (sorted keys): what a run trains, compared before resuming it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Resume:
    """A run to resume: its checkpoint, its MLflow run id, and the last epoch it completed (0-based)."""

    checkpoint: Path
    run_id: str
    epoch: int


def find_resume(name: str, expected: str, root: Path = RESUME_ROOT) -> Resume | None:
    """The resume point of experiment ``name`` when a killed run of the same fingerprint ``expected`` left one.

    A state that is unreadable, incomplete or of another fingerprint is removed (logged): the run starts afresh.
    """
    folder = resume_dir(name, root)
    state_path, ckpt = folder / RESUME_STATE, folder / RESUME_CHECKPOINT
    if not folder.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
        usable = state["fingerprint"] == expected and ckpt.is_file()
        run_id, epoch = str(state["run_id"]), int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable resume state (%s); training from scratch", state_path, exc)
        usable, run_id, epoch = False, "", -1
    if not usable:
        if run_id:
            log.info("%s: left by a run of other params, code or data; training from scratch", folder)
        clear_resume(name, root)
        return None
    return Resume(ckpt, run_id, epoch)


def clear_resume(name: str, root: Path = RESUME_ROOT) -> None:
    """Remove experiment ``name``'s resume state (a finished run never resumes)."""
    shutil.rmtree(resume_dir(name, root), ignore_errors=True)


class ResumeCheckpoint(Checkpoint):
    """Write the resume checkpoint and state at the end of every training epoch (after validation, early stopping
    and the best checkpoint), atomically, so a kill at any moment leaves the previous epoch's complete state.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning runs it after the other callbacks; list it
    after the ``ModelCheckpoint`` so that it runs after that one too.

    Args:
        folder: the experiment's resume folder (:func:`resume_dir`).
        run_id: the MLflow run the training logs into (a resumed run keeps logging there).
        fingerprint: what the run trains (:func:`fingerprint`).
    """

    def __init__(self, folder: Path, run_id: str, fingerprint: str) -> None:
        self.folder, self.run_id, self.fingerprint = Path(folder), run_id, fingerprint

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{RESUME_CHECKPOINT}.{os.getpid()}.tmp"
        try:
            trainer.save_checkpoint(tmp)  # collective under DDP; rank 0 writes
            if not trainer.is_global_zero:
                return
            best_path = getattr(trainer.checkpoint_callback, "best_model_path", "")
            best = Path(best_path) if best_path else None
            if best is not None and best.is_file():
                # DVC deletes checkpoints/<experiment> before it reruns the stage: keep the best model so far here
                atomic_write_bytes(self.folder / best.name, best.read_bytes())
            os.replace(tmp, self.folder / RESUME_CHECKPOINT)
        finally:
            tmp.unlink(missing_ok=True)  # a failed save or copy leaves no temporary behind
        state = {
            "run_id": self.run_id,
            "epoch": trainer.current_epoch,
            "fingerprint": self.fingerprint,
            "best_checkpoint": None if best is None else best.name,
        }
        atomic_write_json(self.folder / RESUME_STATE, state)


def restore_best(resume: Resume, ckpt_dir: Path) -> None:
    """Put the best checkpoint of the killed run back into ``ckpt_dir`` (where its bookkeeping names it)."""
    state = json.loads((resume.checkpoint.parent / RESUME_STATE).read_text())
    name = state.get("best_checkpoint")
    if name and (resume.checkpoint.parent / name).is_file():
        atomic_write_bytes(ckpt_dir / name, (resume.checkpoint.parent / name).read_bytes())


class RngState(L.Callback):
    """Carry the RNG states through a checkpoint: torch (CPU and CUDA), NumPy and Python's ``random``, as they are
    when the checkpoint is written (the end of an epoch), restored when training resumes from it."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        assert isinstance(keys, np.ndarray)
        # plain tensors, ints and floats only: checkpoints must load with torch.load(weights_only=True)
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
