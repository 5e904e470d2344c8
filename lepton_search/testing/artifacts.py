"""An artifact store that is not a folder, for tests: Optuna's artifact-store protocol over a dict."""

from __future__ import annotations

import io
from typing import BinaryIO

import optuna


class DictArtifactStore:
    """Objects in memory, as an object store (S3, GCS) holds them: whole, by key, no listing."""

    def __init__(self, bucket: str = "fake-bucket") -> None:
        self.objects: dict[str, bytes] = {}
        self.bucket = bucket

    def open_reader(self, artifact_id: str) -> BinaryIO:
        if artifact_id not in self.objects:
            raise optuna.artifacts.exceptions.ArtifactNotFound(artifact_id)
        return io.BytesIO(self.objects[artifact_id])

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.objects[artifact_id] = content_body.read()

    def remove(self, artifact_id: str) -> None:
        self.objects.pop(artifact_id)
