"""The numpy array types the placement modules share."""

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RejectionArray = npt.NDArray[np.int32]
"""Indices of screening rejections, -1 where a site passes."""
