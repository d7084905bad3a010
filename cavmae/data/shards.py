"""The shard format: sample schema, deterministic tar writing, fault-tolerant tar reading, shard lists.

Sample schema (one WebDataset sample = consecutive tar members sharing a key)::

    <key>.json      metadata (UTF-8 JSON, below)
    <key>.wav       the clip's audio: 16 kHz, mono, 16-bit PCM WAV (default) ...
    <key>.flac      ... or the same as FLAC (``--audio-format flac``: smaller shards, more CPU per sample)
    <key>.f0.jpg .. <key>.f9.jpg
                    RGB frames at evenly spaced times t_i = clip_start + i * (clip_end - clip_start) / N (the
                    frame showing t_i), shorter side resized to the prepare-time frame size (never enlarged);
                    N = 10 (default) or ``prepare --frames N`` (16 for CAV-MAE Sync: f0.jpg .. f15.jpg)
    <key>.mp4       optional: the raw source file, not re-encoded, for decoding at load time (``--store mp4|both``);
                    a sample may hold only json + mp4, then the loader decodes it as prepare does (cavmae.data.media)

Keys are dot-free because WebDataset splits a member name at its first dot: the key is the
source file's stem with its dots removed, e.g. ``00W1lcxW-WU_40.000.mp4`` -> ``00W1lcxW-WU_40000``.

``<key>.json`` holds::

    key           the sample key
    source        source file, relative to the input folder (datafile mode: the wav)
    ytid          YouTube id when the metadata names one, else null
    start, end    the segment in the original video as the metadata gives it (s; null when unknown)
    clip_start, clip_end
                  the window of the source file the sample holds (s, source timeline)
    duration      seconds of audio in the sample (clips shorter than 10 s are kept; the loader pads)
    fps           average frame rate of the source video (null in datafile mode)
    frame_times   timestamps (s, source timeline) of the frames f0..f{N-1} (datafile mode: CAV-MAE's nominal times)
    frame_size    [height, width] of the stored frames
    num_frames    number of frames N (10 by default; also the manifest's ``options.num_frames``)
    labels        label mids (VGGSound: display names), in metadata order; [] when unlabelled
    label_indices their indices in the dataset's label index (manifest ``label_index``)
    split         the split column of a VGGSound CSV, else null
    audio_channel "first" (default: the first channel at unit gain, as CAV-MAE) or "mean" ((L+R)/2)
    clipped_samples
                  samples beyond 16-bit full scale (clipped when stored; 0 unless the source exceeds full scale)

Tars are written deterministically (members in a fixed order, mtime 0, uid/gid 0, no user names, mode 0644) so that
the same inputs give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

NUM_FRAMES = 10  # frames per clip by default (CAV-MAE); prepare --frames N stores f0 .. f{N-1}
MAX_FRAMES = 64  # most frames per clip a sample may hold (CAV-MAE Sync: 16)
FRAME_EXTS = tuple(f"f{i}.jpg" for i in range(MAX_FRAMES))
MEMBER_ORDER = ("json", "wav", "flac", *FRAME_EXTS, "mp4")
AUDIO_MEMBERS = ("wav", "flac")
_BLOCK = tarfile.BLOCKSIZE  # 512


def make_key(stem: str) -> str:
    """Dot-free WebDataset key for a file stem: dots are dropped (``abc_40.000`` -> ``abc_40000``)."""
    key = stem.replace(".", "")
    if not key or "/" in key:
        raise ValueError(f"cannot make a sample key from {stem!r}")
    return key


def member_bytes(name: str, size: int) -> int:
    """Bytes one member takes in a GNU tar: header, data rounded up to 512, and a long-name record if needed."""
    n = _BLOCK + -(-size // _BLOCK) * _BLOCK
    if len(name.encode()) >= tarfile.LENGTH_NAME:
        n += _BLOCK + -(-(len(name.encode()) + 1) // _BLOCK) * _BLOCK
    return n


def sample_bytes(key: str, members: dict[str, bytes]) -> int:
    return sum(member_bytes(f"{key}.{ext}", len(data)) for ext, data in members.items())


class TarShardWriter:
    """Writes samples into one tar file deterministically. Use as a context manager; `size` is the bytes so far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Kept open across write() calls and closed by close(); hence no `with` here.
        self._file = open(self.path, "wb")  # noqa: SIM115
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115
        self.count = 0

    @property
    def size(self) -> int:
        return self._file.tell()

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample; members maps extension (``json``, ``f0.jpg``, ...) to bytes, written in MEMBER_ORDER."""
        unknown = set(members) - set(MEMBER_ORDER)
        if unknown:
            raise ValueError(f"sample {key}: unknown member extension(s) {sorted(unknown)}")
        for ext in MEMBER_ORDER:
            if ext not in members:
                continue
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, _BytesReader(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> TarShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._file.closed:
            self.close()


class _BytesReader:
    """Minimal file object over bytes for tarfile.addfile (avoids copying into a BytesIO)."""

    def __init__(self, data: bytes):
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(len(self._view), self._pos + n)
        out = self._view[self._pos : end].tobytes()
        self._pos = end
        return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: key = path up to the first dot of the base name, extension = the rest (lower case)."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


class TarFormatError(ValueError):
    """Tar data that does not parse (bad checksum, truncated member, unsupported compression)."""


def _octal(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big") - (0 if field[:1] == b"\x80" else 1 << (8 * len(field) - 8))
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _header_ok(header: bytes) -> bool:
    """A tar header block whose checksum is right (the checksum field counted as 8 spaces)."""
    try:
        return sum(header[:148]) + sum(header[156:]) + 256 == _octal(header[148:156])
    except ValueError:  # a checksum field that is not octal
        return False


def iter_tar(stream, on_resync: Callable[[str], None] | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of an uncompressed tar stream (ustar, GNU long names, pax paths).

    Written for speed: Python's tarfile builds header objects for every member, which at 12 members per sample was a
    large part of the loader's per-sample time (measured: scripts/results/README.md). A header with a bad checksum
    raises TarFormatError, or, with `on_resync`, is skipped: the stream is scanned block by block for the next valid
    ustar header and reading goes on from there, after ``on_resync(message)`` (one damaged header costs one sample, not
    the rest of the shard). A member cut short raises TarFormatError; zero bytes raise TarFormatError ("empty file (0
    bytes)"); an archive that ends without the two zero blocks ends quietly, as with tar(1).
    """
    long_name: str | None = None
    offset = 0  # bytes read so far
    first = True
    while True:
        header = stream.read(_BLOCK)
        if first and not header:
            raise TarFormatError("empty file (0 bytes)")
        first = False
        if len(header) < _BLOCK:
            if header:
                raise TarFormatError("truncated header")
            return
        offset += _BLOCK
        if header == b"\0" * _BLOCK:
            return
        if not _header_ok(header):
            if on_resync is None:
                raise TarFormatError(f"bad header checksum at byte {offset - _BLOCK}")
            bad_at = offset - _BLOCK
            while True:
                header = stream.read(_BLOCK)
                if len(header) < _BLOCK:
                    on_resync(f"bad header checksum at byte {bad_at}; no valid header after it")
                    return
                offset += _BLOCK
                if header[257:262] == b"ustar" and _header_ok(header):
                    break
            on_resync(f"bad header checksum at byte {bad_at}; resynchronised at byte {offset - _BLOCK}")
            long_name = None
        size = _octal(header[124:136])
        data = stream.read(size)
        if len(data) < size:
            raise TarFormatError(f"member cut short ({len(data)} of {size} bytes)")
        pad = -size % _BLOCK
        if pad and len(stream.read(pad)) < pad:
            raise TarFormatError("archive cut short")
        offset += size + pad
        kind = header[156:157]
        if kind == b"L":  # GNU long name for the next member
            long_name = data.rstrip(b"\0").decode()
            continue
        if kind == b"x":  # pax extended header: only the path matters here
            for record in data.decode(errors="replace").split("\n"):
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
            continue
        if kind not in (b"0", b"\0", b"7"):  # directories, links, global pax headers ...
            long_name = None
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
            if header[257:262] == b"ustar" and header[345:346] != b"\0":
                name = header[345:500].split(b"\0", 1)[0].decode(errors="replace") + "/" + name
        yield name, data


def iter_shard(url: str, on_error: Callable[[str, str], None]) -> Iterator[dict]:
    """Samples of one tar shard as dicts {"__key__", "__url__", ext: bytes}.

    Never raises for bad data; every fault is reported with the shard's URL:

    - a shard that cannot be opened, is empty (0 bytes) or is cut short: ``on_error("shard", message)``; the
      samples read before the damage are kept, the one being read is dropped;
    - a damaged tar header: ``on_error("shard", message)``; its member is lost and reading resumes at the next
      valid header, so the samples after it are kept (a sample left without its json or audio is then dropped
      and counted as a "member" error by the loader);
    - a sample with a repeated member: ``on_error("member", message)``; the sample is dropped.

    URLs are opened with webdataset's ``gopen`` (local paths, ``pipe:`` commands, http(s)); gzip-compressed tars
    are recognised by their magic bytes.
    """
    from webdataset import gopen

    current: dict | None = None
    broken = False

    def resynced(message: str) -> None:
        # The damaged header's member is lost (the scan lands on the header after it); the sample that misses it is
        # dropped and counted downstream if it needed that member (json, audio, the chosen frame).
        after = f" after sample {current['__key__']}" if current is not None else ""
        on_error("shard", f"{url}: {message}{after}; one member lost, reading goes on")

    try:
        stream = gopen(url, "rb")
    except Exception as e:
        on_error("shard", f"{url}: cannot open ({e})")
        return
    try:
        peek = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
        if peek == b"\x1f\x8b":
            import gzip

            stream = gzip.GzipFile(fileobj=stream)
        for name, data in iter_tar(stream, resynced):
            key, ext = split_key(name)
            if key.rsplit("/", 1)[-1].startswith("__"):  # WebDataset metadata members (__key__ etc.)
                continue
            if current is not None and current["__key__"] != key:
                if not broken:
                    yield current
                current, broken = None, False
            if current is None:
                current = {"__key__": key, "__url__": url}
            if ext in current:
                if not broken:
                    on_error("member", f"{url}: sample {key} repeats member {ext}; sample skipped")
                broken = True
            current[ext] = data
    except Exception as e:  # TarFormatError, OSError, zlib errors from compressed tars ...
        where = f" (in or after sample {current['__key__']})" if current else ""
        rest = "" if str(e).startswith("empty file") else "; rest of the shard skipped"
        on_error("shard", f"{url}: unreadable tar data{where}: {e}{rest}")
        return
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if current is not None and not broken:
        yield current


def expand_shards(shards: str | Sequence[str], *, missing_ok: bool = False) -> list[str]:
    """Shard URLs from brace patterns; several sources as a list or joined by '::' (``a-{000..009}.tar::b.tar``).

    Local paths may also be glob patterns (``/data/as-*.tar``; matches sorted). A local pattern, brace or glob,
    that matches no existing file is a ValueError naming it, and so is a brace pattern or path naming shards that
    do not exist (they are listed), unless `missing_ok` (``verify-shards`` reports them itself). Remote and
    ``pipe:`` URLs are taken as they are."""
    import glob

    import braceexpand

    if isinstance(shards, (str, os.PathLike)):
        shards = [os.fspath(shards)]
    urls: list[str] = []
    for pattern in shards:
        for part in os.fspath(pattern).split("::"):
            part = part.strip()
            if not part:
                continue
            expanded = list(braceexpand.braceexpand(part))
            if "://" not in part and not part.startswith("pipe:"):
                if glob.has_magic(part):
                    expanded = [match for e in expanded for match in sorted(glob.glob(e))]
                missing = [u for u in expanded if not os.path.exists(u)]
                if len(missing) == len(expanded):
                    raise ValueError(f"shard pattern {part!r} matches no file")
                if missing and not missing_ok:
                    raise ValueError(missing_shards_message(part, expanded, missing))
            urls.extend(expanded)
    return urls


def missing_shards_message(pattern: str, expanded: list[str], missing: list[str]) -> str:
    """One line: which shards of `pattern` do not exist, and what the manifest beside them lists."""
    names = [os.path.basename(u) for u in missing]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    message = f"shard pattern {pattern!r} names {len(expanded)} shard(s), {len(missing)} of which do not exist: {shown}"
    manifest = manifest_path(missing[0])
    if manifest is not None and manifest.is_file():
        try:
            listed = [s["file"] for s in json.loads(manifest.read_text()).get("shards", [])]
        except (OSError, ValueError, KeyError, TypeError):
            return message
        if listed:
            span = listed[0] if len(listed) == 1 else f"{listed[0]} .. {listed[-1]}"
            message += f" ({manifest} lists {len(listed)} shard(s): {span})"
    return message


_SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<num>\d{6})\.tar$")


def manifest_path(shard_url: str) -> Path | None:
    """The manifest written beside a local shard ``<dir>/<name>-000123.tar``: ``<dir>/<name>-manifest.json``."""
    m = _SHARD_RE.match(shard_url)
    if not m or "://" in shard_url or shard_url.startswith("pipe:"):
        return None
    return Path(m.group("prefix") + "-manifest.json")


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"
