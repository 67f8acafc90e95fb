"""What the data modules share: the error they raise and the shape of the alphabets' images."""


class DataError(Exception):
    """Data missing, truncated or corrupt: reported as one line that says what to do."""


DRAWINGS = 20  # drawings of each character
IMAGE_SIZE = 28  # the images of both alphabets, and what the networks take


def real_download_bar() -> None:
    """torchvision's download progress through tqdm where it is installed (``import metagreedy`` keeps
    torch from loading tqdm, so torch.hub's bar is re-pointed here, before torchvision binds it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    import torch.hub
    import torch.utils.model_zoo
    torch.hub.tqdm = torch.utils.model_zoo.tqdm = tqdm
