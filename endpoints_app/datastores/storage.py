"""Open a datastore and read or write its files, through the storage services' official SDKs
(azure-storage-blob, boto3) or the filesystem for folders.

Every operation streams: downloads go to a temporary file in chunks and are renamed into place, and
uploads read the local file in chunks, committed by the service as one object (a Blob's block list,
an S3 multipart upload), so a reader never sees half a file and a repeated upload leaves the same
object. Errors become StorageError with a message that names the cause and never a secret."""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# The SDKs log requests at INFO/DEBUG (URLs, headers): keep them out of the studio's logs, so no
# SAS token or signature can reach a log file.
for _noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "botocore", "boto3", "s3transfer",
               "urllib3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

CHUNK = 4 * 1024 * 1024
MAX_BROWSE = 1000
MAX_LIST = 100_000


class StorageError(Exception):
    """A datastore operation failed; `field` names what the user should fix (credentials, container_name,
    bucket, path) and `missing` says the path does not exist."""

    def __init__(self, message: str, field: str = "path", missing: bool = False):
        super().__init__(message)
        self.message = message
        self.field = field
        self.missing = missing


@dataclass
class Entry:
    """One file or folder: `path` relative to the datastore's root (posix, no leading '/')."""

    path: str
    size: int = 0
    is_dir: bool = False

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def clean_path(raw: str, field: str = "path") -> str:
    """A datastore path: posix, relative, no `..`; '' is the root. Raises StorageError."""
    if not isinstance(raw, str):
        raise StorageError(f"{field} must be a string.", field=field)
    text = raw.strip().replace("\\", "/")
    if "\0" in text:
        raise StorageError(f"{field} holds a NUL character.", field=field)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise StorageError(f"{field} {raw!r} leaves the datastore ('..' is not allowed).", field=field)
    return "/".join(parts)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


class Store:
    """What the studio does with a datastore. Paths are clean_path() results."""

    kind = ""

    def check(self) -> None:
        """Raise StorageError unless the container, bucket or folder answers with these credentials."""
        raise NotImplementedError

    def stat(self, path: str) -> Entry | None:
        """The file at `path`, or None."""
        raise NotImplementedError

    def list_files(self, folder: str) -> list[Entry]:
        """Every file under `folder`, recursively, sorted by path."""
        raise NotImplementedError

    def browse(self, folder: str) -> list[Entry]:
        """The folders and files directly in `folder` (at most MAX_BROWSE)."""
        raise NotImplementedError

    def download(self, path: str, target: Path) -> int:
        """Stream the file at `path` to `target` (temp + rename); returns its bytes."""
        raise NotImplementedError

    def upload(self, source: Path, path: str) -> None:
        """Stream `source` to `path`, replacing what was there."""
        raise NotImplementedError

    # -- for the SDK-backed stores: every SDK error becomes a StorageError without a secret in it --
    _secrets: list[str] = []

    def _sdk_errors(self) -> tuple[type[Exception], ...]:
        return ()

    def _error(self, exc: Exception, path: str = "") -> StorageError:
        return StorageError(self._scrub(str(exc)))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, fn, path: str = ""):
        try:
            return fn()
        except self._sdk_errors() as exc:
            raise self._error(exc, path) from None

    def resolve(self, path: str) -> tuple[str, list[Entry]]:
        """("uri_file", [the file]) or ("uri_folder", its files); StorageError(missing=True) if neither."""
        self.check()
        if path:
            found = self.stat(path)
            if found is not None:
                return "uri_file", [found]
        files = [f for f in self.list_files(path) if not any(p.startswith(".") for p in
                                                             PurePosixPath(f.path).parts)]
        if not files:
            raise StorageError(f"no file or folder {path or '/'!r} in the datastore.", missing=True)
        return "uri_folder", files


def _tmp_beside(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")


def _stream_to(target: Path, write) -> int:
    """`write(file)` streams a download into a temporary file beside `target`, renamed into place once
    whole (a failed or killed download leaves no `target`); returns its bytes."""
    tmp = _tmp_beside(target)
    try:
        with open(tmp, "wb") as out:
            write(out)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target.stat().st_size


# -- folders --------------------------------------------------------------------------------------

class FolderStore(Store):
    """A folder on this machine. Every path is resolved (symlinks too) and must stay under the root."""

    kind = "local"

    def __init__(self, root: Path, hide_dot: bool = True):
        self.root = Path(root)
        self.hide_dot = hide_dot

    def _real_root(self) -> Path:
        return self.root.resolve()

    def _inside(self, path: str) -> Path:
        root = self._real_root()
        candidate = (root / path) if path else root
        resolved = candidate.resolve()
        if resolved != root and root not in resolved.parents:
            raise StorageError(f"path {path!r} resolves outside the datastore's folder.")
        return resolved

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"the folder {str(self.root)!r} does not exist.", field="path")

    def stat(self, path: str) -> Entry | None:
        target = self._inside(path)
        if target.is_file():
            return Entry(path=path, size=target.stat().st_size)
        return None

    def _walk(self, folder: Path, base: str, out: list[Entry]) -> None:
        root = self._real_root()
        for item in sorted(os.scandir(folder), key=lambda e: e.name):
            if self.hide_dot and item.name.startswith("."):
                continue
            relative = _join(base, item.name)
            resolved = Path(item.path).resolve()
            if resolved != root and root not in resolved.parents:
                continue  # a symlink out of the folder: not part of the datastore
            if resolved.is_dir():
                self._walk(Path(item.path), relative, out)
            elif resolved.is_file():
                out.append(Entry(path=relative, size=resolved.stat().st_size))
            if len(out) > MAX_LIST:
                raise StorageError(f"more than {MAX_LIST} files under this path.")

    def list_files(self, folder: str) -> list[Entry]:
        target = self._inside(folder)
        out: list[Entry] = []
        if target.is_dir():
            self._walk(target, folder, out)
        return sorted(out, key=lambda e: e.path)

    def browse(self, folder: str) -> list[Entry]:
        target = self._inside(folder)
        if not target.is_dir():
            raise StorageError(f"no folder {folder or '/'!r} in the datastore.", missing=True)
        root = self._real_root()
        out = []
        for item in sorted(os.scandir(target), key=lambda e: e.name)[:MAX_BROWSE]:
            if self.hide_dot and item.name.startswith("."):
                continue
            resolved = Path(item.path).resolve()
            if resolved != root and root not in resolved.parents:
                continue
            if resolved.is_dir():
                out.append(Entry(path=_join(folder, item.name), is_dir=True))
            elif resolved.is_file():
                out.append(Entry(path=_join(folder, item.name), size=resolved.stat().st_size))
        return out

    def download(self, path: str, target: Path) -> int:
        source = self._inside(path)
        if not source.is_file():
            raise StorageError(f"no file {path!r} in the datastore.", missing=True)

        def copy(out) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)

        return _stream_to(target, copy)

    def upload(self, source: Path, path: str) -> None:
        if not path:
            raise StorageError("an output needs a file path, not the datastore's root.")
        target = self._inside(path)
        if target.is_dir():
            raise StorageError(f"{path!r} is a folder in the datastore.")
        tmp = _tmp_beside(target)
        # The folder may have been created through a symlink: check again where it really is.
        self._inside(str(PurePosixPath(path).parent) if "/" in path else "")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


# -- Azure Blob -----------------------------------------------------------------------------------

def blob_account_url(account_name: str, account_url: str = "", endpoint: str = "", protocol: str = "") -> str:
    if account_url:
        return account_url.rstrip("/")
    return f"{protocol or 'https'}://{account_name}.blob.{endpoint or 'core.windows.net'}"


class BlobStore(Store):
    """An Azure Blob container (azure-storage-blob), with an account key or a SAS token."""

    kind = "azure_blob"

    def __init__(self, account_url: str, account_name: str, container: str, credentials: dict[str, str]):
        from azure.storage.blob import ContainerClient

        self.account_url = account_url
        self.container = container
        self._secrets = [v for v in credentials.values() if v]
        if credentials.get("account_key"):
            credential = {"account_name": account_name, "account_key": credentials["account_key"]}
        elif credentials.get("sas_token"):
            credential = credentials["sas_token"].lstrip("?")
        else:
            credential = None
        self.client = ContainerClient(account_url, container, credential=credential, retry_total=1,
                                      connection_timeout=5, read_timeout=60, max_single_get_size=CHUNK,
                                      max_chunk_get_size=CHUNK, max_single_put_size=CHUNK, max_block_size=CHUNK)

    def _error(self, exc: Exception, path: str = "") -> StorageError:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        code = getattr(exc, "error_code", None) or ""
        code = str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum, as the service names it
        status = getattr(exc, "status_code", None)
        if code == "ContainerNotFound":
            return StorageError(f"the container {self.container!r} does not exist at {self.account_url}.",
                                field="container_name")
        if isinstance(exc, ResourceNotFoundError) or code == "BlobNotFound":
            return StorageError(f"no file {path!r} in container {self.container!r}.", missing=True)
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return StorageError(f"the storage account {self.account_url} refused the credentials "
                                f"({code or status}).", field="credentials")
        if isinstance(exc, HttpResponseError):
            return StorageError(self._scrub(f"the storage account answered {status} {code}."))
        return StorageError(self._scrub(f"cannot reach {self.account_url}: {type(exc).__name__}"), field="account_url")

    def _sdk_errors(self) -> tuple[type[Exception], ...]:
        from azure.core.exceptions import AzureError

        return (AzureError,)

    def check(self) -> None:
        self._call(lambda: next(iter(self.client.list_blobs(results_per_page=1).by_page()), None) and None)

    def stat(self, path: str) -> Entry | None:
        from azure.core.exceptions import ResourceNotFoundError

        if not path:
            return None
        try:
            props = self.client.get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", "") == "ContainerNotFound":
                raise self._error(exc, path) from None
            return None
        except Exception as exc:  # noqa: BLE001 - the SDK's errors, mapped
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):
                raise self._error(exc, path) from None
            raise
        return Entry(path=path, size=int(props.size or 0))

    def list_files(self, folder: str) -> list[Entry]:
        prefix = f"{folder}/" if folder else None

        def run() -> list[Entry]:
            out = []
            for blob in self.client.list_blobs(name_starts_with=prefix):
                if blob.name.endswith("/") or (blob.metadata or {}).get("hdi_isfolder"):
                    continue
                out.append(Entry(path=blob.name, size=int(blob.size or 0)))
                if len(out) > MAX_LIST:
                    raise StorageError(f"more than {MAX_LIST} files under this path.")
            return out

        return sorted(self._call(run, folder), key=lambda e: e.path)

    def browse(self, folder: str) -> list[Entry]:
        prefix = f"{folder}/" if folder else None

        def run() -> list[Entry]:
            out = []
            for item in self.client.walk_blobs(name_starts_with=prefix, delimiter="/"):
                name = item.name.rstrip("/")
                if hasattr(item, "prefix") or item.name.endswith("/"):
                    out.append(Entry(path=name, is_dir=True))
                else:
                    out.append(Entry(path=name, size=int(item.size or 0)))
                if len(out) >= MAX_BROWSE:
                    break
            return out

        found = self._call(run, folder)
        if folder and not found:
            raise StorageError(f"no folder {folder!r} in container {self.container!r}.", missing=True)
        return found

    def download(self, path: str, target: Path) -> int:
        return _stream_to(target, lambda out: self._call(
            lambda: self.client.download_blob(path, max_concurrency=2).readinto(out), path))

    def upload(self, source: Path, path: str) -> None:
        size = source.stat().st_size
        with open(source, "rb") as fh:
            self._call(lambda: self.client.upload_blob(path, fh, length=size, overwrite=True, max_concurrency=2),
                       path)


# -- S3 -------------------------------------------------------------------------------------------

class S3Store(Store):
    """An S3-compatible bucket (boto3), with an access key pair."""

    kind = "s3"

    def __init__(self, bucket: str, endpoint_url: str, region: str, credentials: dict[str, str]):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self._secrets = [v for v in credentials.values() if v]
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=region or "us-east-1",
            aws_access_key_id=credentials.get("access_key_id") or None,
            aws_secret_access_key=credentials.get("secret_access_key") or None,
            config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"},
                          s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def _error(self, exc: Exception, path: str = "") -> StorageError:
        from botocore.exceptions import ClientError

        where = self.endpoint_url or "AWS"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (status == 404 and not path):
                return StorageError(f"the bucket {self.bucket!r} does not exist at {where}.", field="bucket")
            if code in ("NoSuchKey", "404") or status == 404:
                return StorageError(f"no file {path!r} in bucket {self.bucket!r}.", missing=True)
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or status == 403:
                return StorageError(f"{where} refused the credentials for bucket {self.bucket!r} ({code}).",
                                    field="credentials")
            return StorageError(self._scrub(f"{where} answered {status} {code}."))
        return StorageError(self._scrub(f"cannot reach {where}: {type(exc).__name__}"), field="endpoint_url")

    def _sdk_errors(self) -> tuple[type[Exception], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (ClientError, BotoCoreError)

    def check(self) -> None:
        self._call(lambda: self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1))

    def stat(self, path: str) -> Entry | None:
        from botocore.exceptions import ClientError

        if not path:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=path)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._error(exc, path) from None
        except Exception as exc:  # noqa: BLE001 - botocore's errors, mapped
            raise self._error(exc, path) from None
        return Entry(path=path, size=int(head.get("ContentLength") or 0))

    def list_files(self, folder: str) -> list[Entry]:
        prefix = f"{folder}/" if folder else ""

        def run() -> list[Entry]:
            out = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue
                    out.append(Entry(path=obj["Key"], size=int(obj.get("Size") or 0)))
                if len(out) > MAX_LIST:
                    raise StorageError(f"more than {MAX_LIST} files under this path.")
            return out

        return sorted(self._call(run, folder), key=lambda e: e.path)

    def browse(self, folder: str) -> list[Entry]:
        prefix = f"{folder}/" if folder else ""
        page = self._call(lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, Delimiter="/",
                                                              MaxKeys=MAX_BROWSE), folder)
        out = [Entry(path=p["Prefix"].rstrip("/"), is_dir=True) for p in page.get("CommonPrefixes", [])]
        out += [Entry(path=o["Key"], size=int(o.get("Size") or 0)) for o in page.get("Contents", [])
                if not o["Key"].endswith("/")]
        if folder and not out:
            raise StorageError(f"no folder {folder!r} in bucket {self.bucket!r}.", missing=True)
        return sorted(out, key=lambda e: (not e.is_dir, e.path))

    def download(self, path: str, target: Path) -> int:
        return _stream_to(target, lambda out: self._call(
            lambda: self.client.download_fileobj(self.bucket, path, out), path))

    def upload(self, source: Path, path: str) -> None:
        with open(source, "rb") as fh:
            self._call(lambda: self.client.upload_fileobj(fh, self.bucket, path), path)


URI = re.compile(r"^azureml://(?:[^?#]*/)?datastores/(?P<datastore>[^/]+)/paths/?(?P<path>.*)$")


def parse_uri(raw: str) -> tuple[str, str] | None:
    """(datastore name, raw path) of `azureml://datastores/<name>/paths/<path>`, else None."""
    match = URI.match(raw.strip()) if isinstance(raw, str) else None
    if not match:
        return None
    return match["datastore"], match["path"]
