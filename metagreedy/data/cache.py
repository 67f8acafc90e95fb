"""A cache for deterministic tensors that are slow to build (the synthetic alphabet, decoded
Omniglot): a small in-process memo in front of files in a user cache directory.

The directory is ``$METAGREEDY_CACHE``, else ``$XDG_CACHE_HOME/metagreedy``, else
``~/.cache/metagreedy``; deleting it is always safe. A file is a magic line, one JSON header line
(the key, dtype, shape, a SHA-256 of the payload, small metadata) and the raw bytes of the tensor:
reading one parses JSON and copies bytes, it never runs code (no pickle). A missing, truncated,
corrupt or foreign file, or a directory that cannot be written, only means the tensor is built again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor

MAGIC = b"metagreedy-cache 1\n"
MAX_HEADER = 1 << 20  # bytes; a header holds a key and at most a few thousand names
DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
MEMO_SIZE = 4  # entries kept in memory: a process uses one or two alphabets, not dozens

_memo: OrderedDict[str, tuple[Tensor, dict]] = OrderedDict()


def cache_dir() -> str:
    """Where cache files live (not created until something is written)."""
    if os.environ.get("METAGREEDY_CACHE"):
        return os.environ["METAGREEDY_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "metagreedy")


def cached(kind: str, key: dict, build: Callable[[], tuple[Tensor, dict]],
           shape: tuple[int, ...] | None = None) -> tuple[Tensor, dict]:
    """``build()``'s ``(tensor, meta)`` for ``key``: from memory, else from disk, else built and
    stored. ``key`` must name everything the result depends on (JSON-serialisable); a stored tensor
    of another ``shape`` than the one expected is rebuilt. The caller gets its own copy, so writing
    into it in place cannot change what later callers receive."""
    ident = json.dumps({"kind": kind, **key}, sort_keys=True)
    entry = _memo.get(ident)
    if entry is None:
        path = os.path.join(cache_dir(), f"{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:32]}.bin")
        entry = read(path, ident)
        if entry is None or (shape is not None and tuple(entry[0].shape) != tuple(shape)):
            tensor, meta = build()
            entry = (tensor.contiguous(), meta)
            write(path, ident, *entry)
    _memo[ident] = entry
    _memo.move_to_end(ident)
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return entry[0].clone(), copy.deepcopy(entry[1])


def clear_memo() -> None:
    """Forget the in-process copies (the files stay)."""
    _memo.clear()


def write(path: str, ident: str, tensor: Tensor, meta: dict) -> bool:
    """Store atomically (a temporary file renamed into place, so a reader never sees half a file
    and concurrent writers do not mix); False, silently, when that is not possible."""
    dtype = next((name for name, d in DTYPES.items() if d == tensor.dtype), None)
    if dtype is None:
        raise TypeError(f"cache: unsupported dtype {tensor.dtype}")
    payload = tensor.detach().cpu().contiguous().numpy().reshape(-1).view("uint8")  # its bytes, not a copy
    header = {"key": ident, "dtype": dtype, "shape": list(tensor.shape),
              "sha256": hashlib.sha256(payload).hexdigest(), "meta": meta}
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".tmp")  # one per writer
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + json.dumps(header).encode() + b"\n")
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True
    except OSError:  # read-only, full or missing directory: the cache is an optimisation only
        try:
            if tmp is not None:
                os.remove(tmp)
        except OSError:
            pass
        return False


def read(path: str, ident: str) -> tuple[Tensor, dict] | None:
    """The stored ``(tensor, meta)`` if the file is there, is for ``ident`` and is intact; else None."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return None
            header = json.loads(fh.readline(MAX_HEADER))
            dtype, shape = _checked_layout(header, ident)
            payload = bytearray(math.prod(shape) * torch.empty((), dtype=dtype).element_size())
            if fh.readinto(payload) != len(payload) or fh.read(1):
                return None  # truncated, or longer than its header says
    except (OSError, ValueError, TypeError, KeyError):  # unreadable, or a header that is not ours
        return None
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        return None
    tensor = torch.frombuffer(payload, dtype=dtype) if payload else torch.empty(0, dtype=dtype)
    meta = header.get("meta")
    return tensor.view(shape), meta if isinstance(meta, dict) else {}


def _checked_layout(header, ident: str) -> tuple[torch.dtype, list[int]]:
    if not isinstance(header, dict) or header["key"] != ident or not isinstance(header["sha256"], str):
        raise ValueError("not this entry")
    shape = header["shape"]
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError("bad shape")
    return DTYPES[header["dtype"]], shape
