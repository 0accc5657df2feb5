"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), MNIST's drop-in replacement (:mod:`pipelines.data.preparers.idx`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, raw_file, register

_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/b2617bb6d3ffa2e429640350f613e3291e10b141/"
    "data/fashion/",
)

register(
    DatasetEntry(
        "fashion_mnist",
        "multiclass",
        "idx-gz",
        "image",
        files=(
            raw_file(
                "fashion_mnist",
                _URLS,
                "train-images-idx3-ubyte.gz",
                "a26751d72d89606ffbfdd4dd5d16911f01e93a7ff4783c95da7307a073d79fa7",  # repacked mirror copy
                payload="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            raw_file(
                "fashion_mnist",
                _URLS,
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            raw_file(
                "fashion_mnist",
                _URLS,
                "t10k-images-idx3-ubyte.gz",
                "78cb45a589ec14266eab4ac0cb2e9e10a4c076ae2d337fe86383d761bff83f32",  # repacked mirror copy
                payload="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            raw_file(
                "fashion_mnist",
                _URLS,
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
        source="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul, Vollgraf (2017), Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine "
        "Learning Algorithms, arXiv:1708.07747",
        license="MIT (Copyright 2017 Zalando SE)",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        flip_safe=True,  # clothes mirrored left-right are the same kind of clothes
        preparer="pipelines.data.preparers.idx:prepare_fashion_mnist",
    ),
)
