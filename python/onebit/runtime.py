"""Run `.obnn` models (onebit's inference runtime, no LibTorch) on NumPy arrays.

>>> import numpy as np, onebit.runtime
>>> m = onebit.runtime.Model("model.obnn", threads=2)
>>> m.input_shape, m.output_shape          # one image: (1, 28, 28) -> (10,)
>>> logits = m.predict(np.zeros((8, 1, 28, 28), np.float32))   # shape (8, 10)

`predict` takes a float32, C-contiguous array of shape (batch, *input_shape) and reads it in
place (no copy); any other dtype, layout or shape raises TypeError or ValueError naming what was
expected. The output array owns the runtime's result buffer (no copy either). The GIL is
released while the model runs, so threads can run models concurrently. Errors of the runtime
(missing, truncated or corrupt files, unsupported models) raise `ModelError` (a RuntimeError)
with the runtime's message, which names the file and the field.
"""

from onebit._runtime import Model as _Model, ModelError

__all__ = ["Model", "ModelError"]


class Model(_Model):
    """A prepared `.obnn` model.

    Args:
        path: the `.obnn` file.
        threads: threads per `predict` call (the calling thread included), >= 1.
        allow_non_finite: run NaN and infinities through (IEEE arithmetic); by default an input
            holding one raises ValueError naming the image, channel, row and column.

    Attributes: `input_shape` (one image, e.g. (1, 28, 28)), `output_shape` (one image's output,
    trailing 1x1 dimensions dropped: (10,) for a classifier), `output_name` (the name of the op
    that produces the output, from the training-side layer), `metadata` (free-form strings stored
    by the converter), `binary_macs_per_image`, `num_ops`, `path`.
    """

    def __repr__(self):
        return (f"onebit.runtime.Model({self.path!r}, input_shape={tuple(self.input_shape)}, "
                f"output_shape={tuple(self.output_shape)})")
