"""Where a sweep keeps Tune's state (``storage_path``): a local folder, or a URI that is handed
to Ray Tune unchanged (``s3://``, ``gs://``, ``file://``, ``hdfs://``, or any scheme an
installed fsspec package serves). No Ray here: the sweep file is checked with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

# Schemes pyarrow serves itself (Ray Tune opens a storage_path with pyarrow), and the
# pyarrow.fs class that exists only where pyarrow was built with that filesystem.
PYARROW_SCHEMES = {"file": "LocalFileSystem", "s3": "S3FileSystem", "gs": "GcsFileSystem",
                   "gcs": "GcsFileSystem", "hdfs": "HadoopFileSystem",
                   "viewfs": "HadoopFileSystem"}


def is_uri(path: str) -> bool:
    return "://" in path


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower()


def pyarrow_serves(uri: str) -> bool:
    """Whether pyarrow itself opens this URI (as Ray Tune does with a storage_path)."""
    import pyarrow.fs

    return hasattr(pyarrow.fs, PYARROW_SCHEMES.get(scheme(uri), "-"))


def storage_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot hold a sweep (one line), or None. A URI needs a filesystem for its
    scheme: pyarrow's own, or an importable fsspec implementation (s3fs, gcsfs, adlfs, ...)."""
    if not is_uri(path):
        return None
    if pyarrow_serves(path):
        return None
    import fsspec

    name = scheme(path)

    try:
        fsspec.get_filesystem_class(name)
    except ImportError as err:   # known to fsspec, its package is not installed
        return f"no filesystem for '{name}://' is installed here ({err})"
    except ValueError:
        return (f"no filesystem knows the scheme '{name}://'; use a folder or a URI such as "
                f"s3://bucket/sweeps, gs://bucket/sweeps or file:///shared/sweeps")
    return None


def open_storage(path: str):
    """(pyarrow filesystem, path on it) for a folder or URI; ``storage_filesystem`` is the
    filesystem to give Ray Tune where pyarrow does not serve the scheme itself (else None)."""
    import pyarrow.fs

    if not is_uri(path):
        return pyarrow.fs.LocalFileSystem(), str(Path(path).resolve())
    if pyarrow_serves(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), inner


def tune_filesystem(path: str):
    """The ``storage_filesystem`` for Tune: None where Tune resolves ``path`` itself."""
    if not is_uri(path) or pyarrow_serves(path):
        return None
    return open_storage(path)[0]


def exists(path: str) -> bool:
    import pyarrow.fs

    fs, inner = open_storage(path)
    return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


def read_text(path: str) -> Optional[str]:
    """The file's text, or None if it does not exist."""
    import pyarrow.fs

    fs, inner = open_storage(path)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(inner) as handle:
        return handle.read().decode()


def write_text(path: str, text: str) -> None:
    fs, inner = open_storage(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as handle:
        handle.write(text.encode())


def upload_folder(local: Path, path: str) -> None:
    """Copy a local folder's files to ``path`` (a folder or URI)."""
    import pyarrow.fs

    fs, inner = open_storage(path)
    fs.create_dir(inner, recursive=True)
    pyarrow.fs.copy_files(str(local), inner, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)


def join(path: str, *parts: str) -> str:
    """``path/part/...`` for folders and URIs alike (a folder comes back absolute)."""
    base = path.rstrip("/") if is_uri(path) else str(Path(path).resolve())
    return "/".join([base, *parts])
