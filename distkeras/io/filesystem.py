"""Files under a directory that is a local path or any Hadoop filesystem URI.

Plain paths are read and written by Python; URIs (``file://``, ``hdfs://``, ``s3a://``,
``root://`` through a Hadoop connector, ...) through the Hadoop ``FileSystem`` of the Spark
session, so whatever the cluster can read, distkeras can write checkpoints and models to.

Example::

    fs = filesystem(spark, "hdfs:///user/me/models/hlf")
    fs.write(fs.join("model.keras"), data)
    data = fs.read(fs.join("model.keras"))
"""
from __future__ import annotations

import os
import shutil


def filesystem(spark, root: str) -> "LocalFS | HadoopFS":
    """The filesystem of ``root``: Hadoop's for a URI, Python's for a plain path."""
    root = str(root)
    return HadoopFS(spark, root) if "://" in root else LocalFS(os.path.abspath(root))


class LocalFS:
    """Files under a local directory (plain Python I/O, fsync'd writes)."""

    def __init__(self, root: str):
        self.root = root

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def list(self) -> list[str]:
        return os.listdir(self.root) if os.path.isdir(self.root) else []

    def write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def delete(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


class HadoopFS:
    """The same operations through the JVM's Hadoop FileSystem (HDFS, S3A, file://, ...)."""

    def __init__(self, spark, root: str):
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._root = jvm.org.apache.hadoop.fs.Path(root)
        self._fs = self._root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        self.root = root.rstrip("/")

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def list(self) -> list[str]:
        if not self._fs.exists(self._root):
            return []
        return [s.getPath().getName() for s in self._fs.listStatus(self._root)]

    def write(self, path: str, data: bytes) -> None:
        out = self._fs.create(self._path(path), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def read(self, path: str) -> bytes:
        stream = self._fs.open(self._path(path))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def rename(self, src: str, dst: str) -> None:
        if not self._fs.rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))


def remove_path(spark, path: str) -> None:
    """Delete a directory through Hadoop's FileSystem (local, HDFS, ...)."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - no Python API for Hadoop filesystems
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)
