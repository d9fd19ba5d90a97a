"""Datasets for the training examples: bundled, synthetic, and read from files.

Everything here is NumPy: features come back as ``float32`` arrays of shape
``(n, features)``, class labels as ``int32`` arrays of shape ``(n,)`` and
regression targets as ``float32`` arrays of shape ``(n, targets)``.

- :func:`load_digits`: the 8x8 handwritten digits, bundled with funcnet.
- :func:`xor`, :func:`spiral`, :func:`sine`: small synthetic sets, deterministic
  given ``seed``.
- :func:`load_idx`, :func:`load_mnist_dir`, :func:`load_npz`, :func:`load_csv`:
  file loaders that check what they read and say what is wrong.
- :func:`split` and :func:`standardize`: a shuffled train/val/test split and
  per-feature normalisation with the training split's statistics.
- :func:`load`: all of the above in one call, by name or path, returning a
  :class:`Dataset`.

Every bad file or argument raises :class:`DataError`, a ``ValueError`` whose
one-line message starts with the file (or the function) and says what is wrong,
e.g. ``images.idx: truncated: header says 60000x28x28 ubyte = 47040000 bytes of
data, file has 1000 after the 16-byte header``.

The file loaders treat files as untrusted: a header is checked (against the
file's size, what its compression can expand to, and the machine's memory)
before anything it describes is allocated, and no more than it describes is
read; class labels are range-checked before they become int32; NaN, infinite
and float32-overflowing values are refused. Paths that are not regular files
(named pipes, devices such as ``/dev/zero``, or links to them) are refused
unless ``allow_special_files=True`` is passed, and even then at most 1 GiB is
read from them.
"""

# in the order of the API page (mkdocstrings lists the members in source order)
from funcnet.data.types import DataError, Split, Dataset
from funcnet.data.synthetic import load_digits, xor, spiral, sine
from funcnet.data.idx import load_idx, load_mnist_dir
from funcnet.data.npz import load_npz
from funcnet.data.csv import load_csv
from funcnet.data.prepare import split, standardize
from funcnet.data.loader import NAMES, load

__all__ = [
    "DataError", "Split", "Dataset", "NAMES",
    "load_digits", "xor", "spiral", "sine",
    "load_idx", "load_mnist_dir", "load_npz", "load_csv",
    "split", "standardize", "load",
]
