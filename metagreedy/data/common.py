"""What the data modules share: the error they raise, the shape of the alphabets' images, and the
packages that read the real datasets (torchvision and Pillow, the extra ``data``: the library itself
needs neither)."""


class DataError(Exception):
    """Data missing, truncated or corrupt: reported as one line that says what to do."""


DRAWINGS = 20  # drawings of each character
IMAGE_SIZE = 28  # the images of both alphabets, and what the networks take


def torchvision():
    """torchvision, imported on use (reading the real datasets needs it; see :func:`_missing`)."""
    try:
        import torchvision
    except ImportError as e:
        raise _missing("torchvision") from e
    return torchvision


def pil_image():
    """Pillow's ``PIL.Image``, imported on use (decoding Omniglot's PNGs needs it)."""
    try:
        from PIL import Image
    except ImportError as e:
        raise _missing("Pillow") from e
    return Image


def _missing(package: str) -> ImportError:
    return ImportError(f"reading the real datasets needs torchvision and Pillow ({package} is not installed): "
                       "pip install 'metagreedy[data]'; the synthetic alphabet needs neither")
