"""Omniglot through torchvision, as a uint8 tensor [classes, 20, 28, 28] in a stable class order.

torchvision's ``Omniglot`` checks for the original zip files even with ``download=False`` and orders
classes by ``os.listdir``; :class:`OmniglotFolders` accepts the extracted folders and we sort the
characters by path, so class indices do not depend on the filesystem."""
from __future__ import annotations

import os
import socket

import torch

from . import DataError

DRAWINGS = 20
HOW_TO_GET = ("get Omniglot with `python -c \"import torchvision; torchvision.datasets.Omniglot('{root}', "
              "download=True)\"` on a machine with internet (or copy omniglot-py/images_background and "
              "images_evaluation under {root})")


def _torchvision_omniglot():
    import torchvision

    class OmniglotFolders(torchvision.datasets.Omniglot):
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


def load_omniglot(root: str, background: bool = True, size: int = 28) -> tuple[torch.Tensor, list[str]]:
    """``(images, names)``: uint8 [classes, 20, size, size] with ink = 255, and 'Alphabet/characterNN'
    names, sorted. Truncated or missing files raise DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not available(root):
        raise DataError(f"Omniglot is not under '{root}'; " + HOW_TO_GET.format(root=root))
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
                    im = im.convert("L").resize((size, size), Image.LANCZOS)
                    images[c, d] = 255 - torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                raise DataError(f"cannot read '{path}' ({type(e).__name__}): the file is truncated or corrupt; "
                                "restore it or download the data again") from None
    return images, [c.replace(os.sep, "/") for c in characters]
