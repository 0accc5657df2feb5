"""The AT&T faces for the Siamese network (notes 001, "Siamese Network (Facial tracking system)"); read by the
image_folder reader (:mod:`pipelines.data.preparers.image_folder`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, register

register(
    DatasetEntry(
        "att_faces",
        "multiclass",
        "image_folder",
        "image",
        source="The Database of Faces (formerly The ORL Database of Faces), AT&T Laboratories Cambridge / Olivetti "
        "Research Laboratory, 1992-1994: 40 subjects x 10 grey images, 92x112",
        citation="Samaria, Harter (1994), Parameterisation of a stochastic model for human face identification, "
        "2nd IEEE Workshop on Applications of Computer Vision",
        license="free for research use with credit to the Olivetti Research Laboratory",
        classes=tuple(f"s{k}" for k in range(1, 41)),
        folder_sha256="de45a65f9c353ff9364f6d79a2c5a3e0f98e9a4751e1a3133a77b444864f1ebf",
        preparer="pipelines.data.preparers.image_folder:prepare_att_faces",
    ),
)
