"""MNIST (LeCun et al. 1998), and the single-object localization canvas built from its digits (notes 000, "Image
or Object localization"): each real digit pasted at a seeded random position and scale on a blank canvas; the target
is the digit's class and bounding box (:mod:`pipelines.data.preparers.idx`, :mod:`~pipelines.data.preparers.localization`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, raw_file, register

_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

MNIST = DatasetEntry(
    "mnist",
    "multiclass",
    "idx-gz",
    "image",
    files=(
        raw_file(
            "mnist",
            _URLS,
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # canonical
            "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",  # repacked mirror copy
            payload="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        raw_file(
            "mnist",
            _URLS,
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        raw_file(
            "mnist",
            _URLS,
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        raw_file(
            "mnist",
            _URLS,
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    source="http://yann.lecun.com/exdb/mnist/",
    citation="LeCun, Bottou, Bengio, Haffner (1998), Gradient-based learning applied to document recognition",
    license="commonly cited as CC BY-SA 3.0",
    classes=tuple(str(d) for d in range(10)),
    preparer="pipelines.data.preparers.idx:prepare_mnist",
)

register(
    MNIST,
    DatasetEntry(
        "mnist_localization",
        "localization",
        "idx-gz-canvas",
        "image",
        files=MNIST.files,
        source="MNIST digits (http://yann.lecun.com/exdb/mnist/) pasted on a 64x64 canvas by the prepare stage",
        citation=MNIST.citation,
        license=MNIST.license,
        classes=MNIST.classes,
        base="mnist",
        preparer="pipelines.data.preparers.localization:prepare_mnist_localization",
    ),
)
