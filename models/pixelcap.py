"""PIL's decompression-bomb cap (``PIL.Image.MAX_IMAGE_PIXELS``), which every reader of image files (plain images and
DICOM) checks itself, before decoding, and names in its error."""

import warnings

from PIL import Image

# every reader checks the cap itself and says so; PIL's own warning of an image over it (Image.open's) is left out
# once, for the process: warning filters are global, and setting them in each decoding thread would race
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def over_pixel_cap(counted, pixels):
    """Why an image of ``pixels`` pixels (``counted``: as what) is not decoded, or None where PIL's cap allows it."""
    cap = Image.MAX_IMAGE_PIXELS
    if cap and pixels > cap:
        return f"{counted} = {pixels} pixels, more than the limit of {cap} (PIL.Image.MAX_IMAGE_PIXELS), as a " \
               f"possible decompression bomb"
    return None
