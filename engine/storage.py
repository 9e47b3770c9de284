"""Where `--input` and `--out` live: a local folder (a `Path`, unchanged), or a prefix in S3 or GCS.

`location("s3://bucket/prefix")` gives an `ObjectPath`: the subset of the `pathlib.Path` interface the
engine uses (`/`, `exists`, `stat().st_size`, `rglob`, `unlink`, `read_text`, ...) over a pyarrow
filesystem, so the runner's resume logic reads the same for both. Local paths stay `Path` objects and
go through exactly the code they went through before (write-then-rename, fsync, flock).

Object stores have no rename, no fsync and no flock. What replaces them:

- **Atomic commit.** A shard's output is written to a local spool file (an unlinked temporary file: a
  killed process leaves nothing behind) and uploaded to its final key once it is whole. An S3 PUT, and a
  multipart upload completed by CompleteMultipartUpload, is atomic: a reader sees the whole object or
  nothing; pyarrow completes the upload only when the stream is closed. A run killed mid-upload leaves an
  *incomplete multipart upload*, which no reader sees; the next run that takes the lease aborts the
  incomplete uploads under `--out`. The run manifest (`_engine_manifest.json`, one PUT after each
  shard's upload) stays the commit record: a shard is done only when the manifest lists it and its
  output object exists with the recorded size, exactly as for local folders.
- **Lock.** `flock` becomes a lease object `--out/.engine.lock`, created with a conditional PUT
  (`If-None-Match: *`, so of two runs starting together exactly one creates it), renewed by a heartbeat
  thread (`If-Match` on its own ETag) and deleted at the end. A lease whose holder stopped renewing
  (killed, machine gone) expires after `LEASE_S`; on the same host a lease whose process is dead is
  taken over at once. Take-over is itself conditional (`If-Match` on the stale lease's ETag), so two
  runs cannot both take a stale lease. A run that finds its lease taken stops before its next write.
  The conditional PUTs go through boto3 (pyarrow's filesystem cannot send them): `pip install
  'reportminer[s3]'`.
- **gs://** is resolved through pyarrow's `GcsFileSystem` (credentials: Application Default
  Credentials). It cannot send a conditional create either, so on GCS the lease is advisory: written,
  read back and checked, which keeps out a run started later but not one started within the same
  second. Run one writer per `--out` there. (Untested here: no GCS server in the test setup.)

Credentials and endpoint come from the standard environment: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL` for an
S3-compatible server (MinIO, Ceph, moto); pyarrow's `FileSystem.from_uri` (measured with pyarrow 24)
and boto3 both honour it.
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import IO, Any

import pyarrow.fs as pafs

from reportminer.data.errors import ConfigError, DataError, OutputLocked
from reportminer.data.io import file_sha256, write_json_atomic

log = logging.getLogger("engine")

SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}
LEASE_S = 120.0  # a lease not renewed for this long is stale; renewed every LEASE_S / 4
_CHUNK = 8 << 20


def is_remote(p: object) -> bool:
    if isinstance(p, ObjectPath):
        return True
    if isinstance(p, str) and "://" in p:
        return p.split("://", 1)[0].lower() in SCHEMES
    return False


def location(p: str | os.PathLike) -> "Path | ObjectPath":
    """A `Path` for a local path (as before), an `ObjectPath` for s3:// and gs:// URLs."""
    if isinstance(p, ObjectPath):
        return p
    if isinstance(p, str) and "://" in p:
        scheme, rest = p.split("://", 1)
        if scheme.lower() not in SCHEMES:
            raise ConfigError(f"{p}: unsupported URL scheme {scheme!r}; use a local path, s3:// or gs://")
        rest = rest.strip("/")
        if not rest:
            raise ConfigError(f"{p}: no bucket named")
        scheme = SCHEMES[scheme.lower()]
        return ObjectPath(scheme, rest, _filesystem(scheme, rest.split("/", 1)[0]))
    return Path(p)


_FILESYSTEMS: dict[tuple[str, str, str], pafs.FileSystem] = {}


def _filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    key = (scheme, bucket, os.environ.get("AWS_ENDPOINT_URL", ""))
    if key not in _FILESYSTEMS:
        try:
            # from_uri, not S3FileSystem(): only from_uri reads AWS_ENDPOINT_URL (pyarrow 24, measured)
            # and looks up the bucket's region.
            _FILESYSTEMS[key] = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]
        except Exception as e:  # pyarrow raises OSError / ArrowInvalid for credentials, region, network
            raise ConfigError(f"{scheme}://{bucket}: cannot open the bucket: {e}") from None
    return _FILESYSTEMS[key]


@dataclass(frozen=True)
class ObjectPath:
    """A key or prefix in an object store, with the `Path` methods the engine uses."""

    scheme: str
    path: str  # "bucket/key/..." without slashes at either end
    fs: pafs.FileSystem = field(compare=False, repr=False)
    _type: Any = field(default=None, compare=False, repr=False)  # FileType from a listing, saves a HEAD

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __truediv__(self, rel: str | os.PathLike) -> "ObjectPath":
        rel = PurePosixPath(os.fspath(rel)).as_posix().strip("/")
        if rel in ("", ".") or ".." in rel.split("/"):
            raise ConfigError(f"{self}: bad relative key {rel!r}")
        return ObjectPath(self.scheme, f"{self.path}/{rel}", self.fs)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.scheme, self.path.rsplit("/", 1)[0], self.fs) if "/" in self.path else self

    @property
    def parents(self) -> list["ObjectPath"]:
        out, p = [], self
        while "/" in p.path:
            p = p.parent
            out.append(p)
        return out

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.path.split("/", 1)[1] if "/" in self.path else ""

    def resolve(self) -> "ObjectPath":
        return self

    def relative_to(self, other: "ObjectPath") -> PurePosixPath:
        if not self.path.startswith(other.path + "/"):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.path[len(other.path) + 1:])

    def _info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as e:
            raise DataError(f"{self}: {e}") from None

    def _kind(self) -> Any:
        return self._type if self._type is not None else self._info().type

    def exists(self) -> bool:
        return self._kind() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._kind() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._kind() == pafs.FileType.File

    def stat(self) -> SimpleNamespace:
        info = self._info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=info.size, st_mtime_ns=info.mtime_ns or 0)

    def rglob(self, pattern: str) -> list["ObjectPath"]:
        """Objects under this prefix whose name matches `pattern`, sorted (object stores have no symlinks)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        except OSError as e:
            raise DataError(f"{self}: cannot list: {e}") from None
        return sorted(
            (ObjectPath(self.scheme, i.path.strip("/"), self.fs, i.type) for i in infos
             if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.base_name, pattern)),
            key=lambda o: o.path,
        )

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Nothing to do: prefixes exist once an object is written under them."""

    def unlink(self, missing_ok: bool = False) -> None:
        _check_lease(self)
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError:
            if not missing_ok or self.exists():
                raise

    def open_input(self) -> Any:
        return self.fs.open_input_file(self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One object, visible whole or not at all (see the module docstring)."""
        upload(_BytesReader(data), self)


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return out


def upload(src: IO[bytes] | _BytesReader, dest: ObjectPath) -> None:
    """Copy a whole local file object to its final key; the object appears when the stream closes.

    pyarrow's output stream completes its multipart upload on close, also from its destructor, so after
    a failed copy the key may hold a partial object: it is deleted, and in any case the run manifest,
    written only after this returns, is what makes a shard done.
    """
    _check_lease(dest)
    out = dest.fs.open_output_stream(dest.path)
    try:
        shutil.copyfileobj(src, out, _CHUNK)
        out.close()
    except BaseException:
        try:
            out.close()
        except Exception:
            pass
        try:
            dest.fs.delete_file(dest.path)
        except Exception:
            log.warning("%s: could not delete a partial upload; the run manifest does not list it", dest)
        raise


def parquet_source(p: Path | ObjectPath) -> tuple[str | Path, pafs.FileSystem | None]:
    """(path, filesystem) for pyarrow.parquet readers: the Path itself for local files."""
    return (p.path, p.fs) if isinstance(p, ObjectPath) else (p, None)


def sha256(p: Path | ObjectPath) -> str:
    if not isinstance(p, ObjectPath):
        return file_sha256(p)
    h = hashlib.sha256()
    with p.fs.open_input_stream(p.path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_json(p: Path | ObjectPath, obj: Any) -> Path | ObjectPath:
    """`write_json_atomic` for local paths; one PUT of the same bytes for objects."""
    if not isinstance(p, ObjectPath):
        return write_json_atomic(p, obj)
    p.write_bytes((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return p


def append_line(p: Path | ObjectPath, line: str) -> None:
    """Append to a log file; objects cannot be appended to, so they are rewritten (we hold the lease)."""
    if not isinstance(p, ObjectPath):
        # O_NOFOLLOW: a symlink planted at a bookkeeping name must not make the run append outside --out
        # (issue 19); the run refuses one before it starts (run_manifest.check_bookkeeping), this closes the race.
        try:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ConfigError(f"{p}: is a symlink; the engine never writes through a link in --out: remove it") from None
            raise
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        return
    old = p.read_bytes() if p.exists() else b""
    p.write_bytes(old + (line + "\n").encode("utf-8"))


# ---- the lease that replaces flock ------------------------------------------------------------------------

_LEASES: dict[str, "Lease"] = {}


def _check_lease(p: ObjectPath) -> None:
    """Refuse to write under a leased prefix once this process has lost the lease."""
    for prefix, lease in list(_LEASES.items()):
        if str(p).startswith(prefix + "/"):
            lease.ensure()


def _now_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class Lease:
    """An exclusive, expiring lock on an object-store `--out` (see the module docstring)."""

    def __init__(self, out: ObjectPath, lock_name: str, lease_s: float = LEASE_S):
        self.out = out
        self.obj = out / lock_name
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.aborted_uploads = 0

    # -- the conditional requests ------------------------------------------------------------------

    def _s3(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise ConfigError(
                    f"{self.out}: an s3:// --out needs boto3 for its lock (conditional PUT): pip install 'reportminer[s3]'"
                ) from None
            self._client = boto3.client("s3")
        return self._client

    def _body(self) -> bytes:
        t = time.time()
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed_at": _now_iso(t), "expires_at": t + self.lease_s}).encode()

    def _put(self, **cond: str) -> bool:
        """PUT the lease under a condition; False when the condition failed (someone else holds it)."""
        if self.out.scheme != "s3":
            return self._put_advisory()
        from botocore.exceptions import ClientError

        try:
            r = self._s3().put_object(Bucket=self.obj.bucket, Key=self.obj.key, Body=self._body(), **cond)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise ConfigError(f"{self.obj}: cannot write the lock object: {e}") from None
        self.etag = r["ETag"]
        return True

    def _put_advisory(self) -> bool:
        with self.obj.fs.open_output_stream(self.obj.path) as f:
            f.write(self._body())
        time.sleep(1.0)  # let a writer that raced us land, then see whose lease stands
        held = self._read()
        self.etag = "advisory"
        return bool(held and held[0].get("owner") == self.owner)

    def _read(self) -> tuple[dict, str] | None:
        """(lease body, ETag) or None when there is no lease."""
        if self.out.scheme != "s3":
            try:
                return json.loads(self.obj.read_bytes()), "advisory"
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                return {}, "advisory"
        from botocore.exceptions import ClientError

        try:
            r = self._s3().get_object(Bucket=self.obj.bucket, Key=self.obj.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ConfigError(f"{self.obj}: cannot read the lock object: {e}") from None
        try:
            body = json.loads(r["Body"].read())
        except ValueError:
            body = {}  # unreadable: treated as expired
        return body, r["ETag"]

    # -- acquire, renew, release -------------------------------------------------------------------

    def _stale(self, held: dict) -> str | None:
        """Why the held lease may be taken over, or None while it is live."""
        if time.time() > float(held.get("expires_at") or 0):
            return f"expired at {_now_iso(float(held.get('expires_at') or 0))}"
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) and held["pid"] != os.getpid():
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return f"its process {held['pid']} on this host is gone"
            except PermissionError:
                pass
        return None

    def __enter__(self) -> "Lease":
        if str(self.out) in _LEASES:
            raise OutputLocked(f"{self.out}: this process already runs on this --out")
        if not self._put(IfNoneMatch="*"):
            cur = self._read()
            if cur is None:  # released between our two requests
                ok = self._put(IfNoneMatch="*")
            else:
                held, etag = cur
                why = self._stale(held)
                if why is None:
                    until = _now_iso(float(held.get("expires_at") or 0))
                    raise OutputLocked(
                        f"{self.out}: another engine run is writing here (host {held.get('host', '?')}, pid "
                        f"{held.get('pid', '?')}; its lease runs until {until} unless renewed); wait for it to finish"
                    )
                log.info("%s: taking over a stale lock (%s)", self.obj, why)
                ok = self._put(IfMatch=etag)
            if not ok:
                raise OutputLocked(f"{self.out}: another engine run took the lock at the same moment; wait for it")
        _LEASES[str(self.out)] = self
        self._thread = threading.Thread(target=self._renew_loop, name="engine-lease", daemon=True)
        self._thread.start()
        if self.out.scheme == "s3":
            try:
                self._abort_incomplete_uploads()
            except Exception as e:  # e.g. a policy without s3:ListBucketMultipartUploads: not worth failing the run
                log.warning("%s: could not clean up incomplete uploads of interrupted runs (%s); a bucket lifecycle "
                            "rule (AbortIncompleteMultipartUpload) does it too", self.out, e)
        return self

    def _renew_loop(self) -> None:
        last_ok = time.time()
        while not self._stop.wait(self.lease_s / 4):
            try:
                if self.out.scheme == "s3":
                    if not self._put(IfMatch=self.etag or "*"):
                        self.lost = "another run took it over"
                        return
                else:
                    with self.obj.fs.open_output_stream(self.obj.path) as f:
                        f.write(self._body())
                last_ok = time.time()
            except Exception as e:  # a network blip: retry until the lease would have expired
                if time.time() - last_ok > self.lease_s:
                    self.lost = f"not renewed for {self.lease_s:.0f} s ({e})"
                    return
                log.warning("%s: could not renew the lock (%s); retrying", self.obj, e)

    def ensure(self) -> None:
        if self.lost:
            raise OutputLocked(f"{self.out}: this run lost its lock ({self.lost}); stopping so two runs never "
                               "write the same shards")

    def _abort_incomplete_uploads(self) -> None:
        """Multipart uploads a killed run left under --out: invisible, but billed until aborted."""
        client = self._s3()
        prefix = self.out.key + "/" if self.out.key else ""
        n = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.out.bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=self.out.bucket, Key=u["Key"], UploadId=u["UploadId"])
                log.info("aborted an incomplete upload of an interrupted run: s3://%s/%s", self.out.bucket, u["Key"])
                n += 1
        self.aborted_uploads = n

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        _LEASES.pop(str(self.out), None)
        if self.lost:
            return
        try:
            cur = self._read()
            if cur and cur[0].get("owner") == self.owner:
                if self.out.scheme == "s3":  # boto3: pyarrow's delete_file leaves an "out/" marker object behind
                    self._s3().delete_object(Bucket=self.obj.bucket, Key=self.obj.key)
                else:
                    self.obj.fs.delete_file(self.obj.path)
        except Exception as e:  # the lease expires by itself; say so rather than mask the run's outcome
            log.warning("%s: could not release the lock (%s); it expires within %.0f s", self.obj, e, self.lease_s)


__all__ = ["LEASE_S", "Lease", "ObjectPath", "append_line", "is_remote", "location", "parquet_source", "sha256",
           "upload", "write_json"]
