"""What logging the model costs ``train``: the served pyfunc (``pipelines.tracking.log_model``: a plain-data bundle and
a model from code) against the former ``mlflow.pytorch.log_model`` (a torch.export "pt2" archive), side by side in
one process, on the same network and store.

    python -m benchmarks.log_model [--repeats 3]

For each of an MLP on churn (12 features) and LeNet-5 on MNIST, ``repeats`` rounds each log both models to a fresh
run of a temporary SQLite store, alternating, and time them (wall seconds, ``time.perf_counter``). The first round
includes each path's one-off imports and initialisation (torch.export's, MLflow's pyfunc), as a stage process pays
them once. Prints a Markdown table; the results are written down in ``benchmarks/SERVING.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.log_model", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import mlflow
    import torch
    from mlflow.models import infer_signature

    from models.registry import NetworkSpec, build_network
    from pipelines.config import DatasetConfig
    from pipelines.data.encoding import raw_input_for
    from pipelines.data.preparers import prepare_dataset
    from pipelines.serving.bundle import Bundle
    from pipelines.tracking import log_model, pip_requirements
    from tests.conftest import DATA_MIRROR

    cases = [("churn", "mlp", "binary"), ("mnist", "lenet5", "multiclass")]
    print("| network | round | pt2 (s) | served pyfunc (s) | ratio |\n| --- | --- | --- | --- | --- |")
    for dataset, architecture, task in cases:
        arrays, meta, _ = prepare_dataset(dataset, DatasetConfig(max_train_samples=200), 42, mirror=DATA_MIRROR)
        root = Path(tempfile.mkdtemp(prefix="deepnotes-bench-"))
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
        shape = tuple(meta["input_shape"])
        outputs = 1 if task == "binary" else meta["num_classes"]
        network = build_network(architecture, NetworkSpec(shape, outputs), {}).eval()
        task_meta = {k: meta[k] for k in ("classes", "num_classes", "input_shape")}
        bundle = Bundle(
            architecture,
            {"input_shape": list(shape), "num_outputs": outputs},
            {},
            task,
            task_meta,
            raw_input_for(meta, root),
            network,
        )
        example = arrays["test"][0][:2]
        for round_ in range(args.repeats):
            run_id = client.create_run(experiment).info.run_id
            start = time.perf_counter()
            with torch.no_grad():
                output = network(torch.as_tensor(example)).numpy()
            with mlflow.start_run(run_id=run_id):
                mlflow.pytorch.log_model(
                    network,
                    name="model",
                    signature=infer_signature(example, output),
                    input_example=example,
                    pip_requirements=pip_requirements(),
                )
            pt2 = time.perf_counter() - start
            run_id = client.create_run(experiment).info.run_id
            start = time.perf_counter()
            log_model(bundle, example, run_id)
            served = time.perf_counter() - start
            print(f"| {architecture} ({dataset}) | {round_ + 1} | {pt2:.2f} | {served:.2f} | {served / pt2:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
