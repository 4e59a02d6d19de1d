"""Data sets as uint8 NHWC arrays in host memory: `load(spec)` returns a `Dataset`.

Sources: CIFAR-10/100 archives (`cifar.py`), class-per-folder images (`folder.py`), prepared
TFDS sets (`tfds_source.py`), and in-memory toys (`toy.py`); decoded arrays are cached on disk
(`cache.py`). The on-device input pipeline is in `pipeline.py`.
"""

from jaxcnn.data.cache import cache_dir
from jaxcnn.data.dataset import Dataset
from jaxcnn.data.spec import load, load_options, prepare

__all__ = ["Dataset", "cache_dir", "load", "load_options", "prepare"]
