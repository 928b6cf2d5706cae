"""The numpy array types the placement modules share."""

from typing import Any

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SmallIntArray = npt.NDArray[np.int32]
"""Indices and counts in the tables with a row per candidate placement, where memory matters."""
AnyIntArray = npt.NDArray[np.signedinteger[Any]]
"""Integers of either width."""
RejectionArray = npt.NDArray[np.int32]
"""Indices of screening rejections, -1 where a site passes."""
