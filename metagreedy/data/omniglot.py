"""Omniglot through torchvision, as a uint8 tensor [classes, 20, 28, 28] in a stable class order.

torchvision's ``Omniglot`` checks for the original zip files even with ``download=False`` and orders
classes by ``os.listdir``; :class:`OmniglotFolders` accepts the extracted folders and we sort the
characters by path, so class indices do not depend on the filesystem."""
from __future__ import annotations

import hashlib
import os
import socket

import torch

from .common import DRAWINGS, IMAGE_SIZE, DataError, pil_image, torchvision
from .cache import cached
HOW_TO_GET = ("get Omniglot with `python -c \"import torchvision; torchvision.datasets.Omniglot('{root}', "
              "download=True)\"` on a machine with internet (or copy omniglot-py/images_background and "
              "images_evaluation under {root})")


def _torchvision_omniglot():
    class OmniglotFolders(torchvision().datasets.Omniglot):
        """torchvision's Omniglot that accepts extracted folders without the original zip files."""

        def _check_integrity(self) -> bool:
            return os.path.isdir(os.path.join(self.root, self._get_target_folder()))

    return OmniglotFolders


def available(root: str) -> bool:
    base = os.path.join(root, "omniglot-py")
    return all(os.path.isdir(os.path.join(base, f"images_{part}")) for part in ("background", "evaluation"))


def download(root: str, timeout: float = 20.0) -> None:
    """Download through torchvision; raise DataError (with what to do) if that is not possible."""
    cls = _torchvision_omniglot()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for background in (True, False):
            cls(root, background=background, download=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise DataError(f"Omniglot is not under '{root}' and could not be downloaded "
                        f"({type(e).__name__}); " + HOW_TO_GET.format(root=root)) from None
    finally:
        socket.setdefaulttimeout(old)


LOADER_VERSION = 1  # part of the cache key: bump it whenever decoding changes the images


def ink(image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """How the loader stores a drawing: grey, resized to ``size`` x ``size`` (Lanczos), inverted so
    that ink = 255; uint8 [size, size]."""
    Image = pil_image()
    image = image.convert("L").resize((size, size), Image.LANCZOS)
    return 255 - torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size)


def preprocess(image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """An Omniglot drawing (a PIL image, or the path of a PNG) as the networks take it: float32
    [1, size, size] in [0, 1] with ink = 1. It is the loader's transform followed by the task
    samplers' scaling, so a drawing preprocessed here equals, bit for bit, that drawing in an
    episode; use it to classify your own images with a trained run's ``predict``."""
    Image = pil_image()
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return preprocess(opened, size)
    return ink(image, size).float().div_(255).unsqueeze(0)


def load_omniglot(root: str, background: bool = True, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, list[str]]:
    """``(images, names)``: uint8 [classes, 20, size, size] with ink = 255, and 'Alphabet/characterNN'
    names, sorted. Truncated or missing files raise DataError naming the file.

    Decoding the PNGs takes seconds and every training process pays it, so the images are cached
    (``cache.py``) under a key of the folder, the size and a fingerprint of its files: a changed
    folder is decoded again."""
    if not available(root):
        raise DataError(f"Omniglot is not under '{root}'; " + HOW_TO_GET.format(root=root))
    folder = os.path.join(root, "omniglot-py", f"images_{'background' if background else 'evaluation'}")
    files = fingerprint(folder)
    if files is None:  # unreadable: decoding says which file
        return _decode(root, background, size)
    key = {"version": LOADER_VERSION, "folder": os.path.realpath(folder), "size": size, "files": files}

    def build():
        images, names = _decode(root, background, size)
        return images, {"names": names}

    images, meta = cached("omniglot", key, build, shape=(files["characters"], DRAWINGS, size, size))
    return images, meta["names"]


def fingerprint(folder: str) -> dict | None:
    """A cheap summary of the drawings under ``folder`` (Alphabet/character/*.png) that changes
    when a file is added, removed, renamed, resized or rewritten: their count, total size, newest
    modification time, a hash of their paths, and the number of characters. None if unreadable."""
    paths, total, newest, characters = [], 0, 0, 0
    try:
        for alphabet in _listing(folder, dirs=True):
            for character in _listing(alphabet.path, dirs=True):
                characters += 1
                for entry in _listing(character.path, dirs=False):
                    if entry.name.endswith(".png"):
                        st = entry.stat()
                        paths.append(f"{alphabet.name}/{character.name}/{entry.name}")
                        total, newest = total + st.st_size, max(newest, st.st_mtime_ns)
    except OSError:
        return None
    digest = hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()
    return {"count": len(paths), "bytes": total, "newest_mtime_ns": newest, "paths_sha256": digest,
            "characters": characters}


def _listing(path: str, dirs: bool) -> list[os.DirEntry]:
    with os.scandir(path) as entries:  # closed even when a stat fails half-way
        return [e for e in entries if e.is_dir() == dirs]


def _decode(root: str, background: bool, size: int) -> tuple[torch.Tensor, list[str]]:
    """The uncached loader: every PNG decoded and turned into :func:`ink`."""
    Image = pil_image()
    UnidentifiedImageError = Image.UnidentifiedImageError

    ds = _torchvision_omniglot()(root, background=background, download=False)
    folder = os.path.join(ds.root, ds._get_target_folder())
    characters = sorted(ds._characters)
    if not characters:
        raise DataError(f"no Omniglot characters in '{folder}'; " + HOW_TO_GET.format(root=root))
    images = torch.empty(len(characters), DRAWINGS, size, size, dtype=torch.uint8)
    for c, character in enumerate(characters):
        files = sorted(f for f in os.listdir(os.path.join(folder, character)) if f.endswith(".png"))
        if len(files) != DRAWINGS:
            raise DataError(f"'{os.path.join(folder, character)}' has {len(files)} drawings, expected {DRAWINGS}: "
                            "the data is incomplete; " + HOW_TO_GET.format(root=root))
        for d, name in enumerate(files):
            path = os.path.join(folder, character, name)
            try:
                with Image.open(path) as im:
                    images[c, d] = ink(im, size)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                raise DataError(f"cannot read '{path}' ({type(e).__name__}): the file is truncated or corrupt; "
                                "restore it or download the data again") from None
    return images, [c.replace(os.sep, "/") for c in characters]
