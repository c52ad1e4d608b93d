"""The type of the file-system paths gsplat_py's functions accept."""

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
