"""Files under a directory that is a local path or any Hadoop filesystem URI.

Plain paths are read and written by Python; URIs (``file://``, ``hdfs://``, ``s3a://``,
``root://`` through a Hadoop connector, ...) through the Hadoop ``FileSystem`` of a classic Spark
session, so whatever the cluster can read, distkeras can write checkpoints and models to. A Spark
Connect client has no JVM: there URIs go through pyarrow's filesystems (``file://``, ``s3://``
and ``s3a://``, ``gs://``, ``hdfs://`` with libhdfs, ``abfs://``), in the same layout.

Example::

    fs = filesystem(spark, "hdfs:///user/me/models/hlf")
    fs.write(fs.join("model.keras"), data)
    data = fs.read(fs.join("model.keras"))
"""
from __future__ import annotations

import logging
import os
import shutil

from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)


def filesystem(spark, root: str) -> "LocalFS | HadoopFS | ArrowFS":
    """The filesystem of ``root``: Python's for a plain path; for a URI Hadoop's (classic
    session) or pyarrow's (Spark Connect, or no session)."""
    root = str(root)
    if "://" not in root:
        return LocalFS(os.path.abspath(root))
    return ArrowFS(root) if spark is None else spark_api(spark).filesystem(root)


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

    def __init__(self, sc, root: str):
        jvm = sc._jvm  # noqa: SLF001 - no Python API for Hadoop filesystems
        self._jvm = jvm
        self._root = jvm.org.apache.hadoop.fs.Path(root)
        self._fs = self._root.getFileSystem(sc._jsc.hadoopConfiguration())  # noqa: SLF001
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


class ArrowFS:
    """The same operations through pyarrow's filesystem of a URI (no JVM needed)."""

    _SCHEMES = {"s3a": "s3", "s3n": "s3"}       # Hadoop's names for what pyarrow calls s3

    def __init__(self, root: str):
        from pyarrow import fs

        root, _, query = root.partition("?")        # pyarrow's options: ?endpoint_override=
        self.root = root.rstrip("/")
        scheme, rest = self.root.split("://", 1)
        self._fs, self._base = fs.FileSystem.from_uri(
            f"{self._SCHEMES.get(scheme, scheme)}://{rest}" + (f"?{query}" if query else ""))
        self._base = self._base.rstrip("/")

    def _path(self, path: str) -> str:
        path = path.partition("?")[0].rstrip("/") or path
        if not path.startswith(self.root):
            raise ValueError(f"{path} is not under {self.root}")
        return self._base + path[len(self.root):]

    def _info(self, path: str):
        return self._fs.get_file_info(self._path(path))

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def list(self) -> list[str]:
        from pyarrow import fs

        if self._info(self.root).type != fs.FileType.Directory:
            return []
        return [info.base_name for info in self._fs.get_file_info(fs.FileSelector(self._base))]

    def write(self, path: str, data: bytes) -> None:
        target = self._path(path)
        self._fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self._fs.open_output_stream(target) as out:
            out.write(data)

    def read(self, path: str) -> bytes:
        with self._fs.open_input_stream(self._path(path)) as stream:
            return stream.readall()

    def rename(self, src: str, dst: str) -> None:
        """Move a file or a directory; object stores (S3, GCS) cannot move a directory, so
        there its files are copied, then the source is deleted."""
        from pyarrow import fs

        source, target = self._path(src), self._path(dst)
        try:
            self._fs.move(source, target)
            return
        except (OSError, NotImplementedError):
            if self._fs.get_file_info(source).type != fs.FileType.Directory:
                raise
        for info in self._fs.get_file_info(fs.FileSelector(source, recursive=True)):
            if info.type == fs.FileType.File:
                copy = target + info.path[len(source):]
                self._fs.create_dir(copy.rsplit("/", 1)[0], recursive=True)
                self._fs.copy_file(info.path, copy)
        self._fs.delete_dir(source)

    def delete(self, path: str) -> None:
        from pyarrow import fs

        kind = self._info(path).type
        if kind == fs.FileType.Directory:
            self._fs.delete_dir(self._path(path))
        elif kind == fs.FileType.File:
            self._fs.delete_file(self._path(path))

    def exists(self, path: str) -> bool:
        from pyarrow import fs

        return self._info(path).type != fs.FileType.NotFound


def remove_path(spark, path: str) -> None:
    """Delete a directory Spark wrote: a plain path is in Spark's default filesystem (HDFS on
    YARN) on a classic session, and on this machine from a Spark Connect client. A failure is
    logged with the path to remove by hand, never raised: it must not cost a trained model."""
    path = str(path)
    api = spark_api(spark)
    try:
        fs = LocalFS(os.path.abspath(path)) if api.is_connect and "://" not in path \
            else api.filesystem(path)
        fs.delete(fs.root)
    except Exception as exc:  # noqa: BLE001 - cleaning up after a finished run
        log.warning("could not delete %s (%s): remove it by hand", path, exc)
