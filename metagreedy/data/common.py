"""What the data modules share: the error they raise and the shape of the alphabets' images."""


class DataError(Exception):
    """Data missing, truncated or corrupt: reported as one line that says what to do."""


DRAWINGS = 20  # drawings of each character
IMAGE_SIZE = 28  # the images of both alphabets, and what the networks take
