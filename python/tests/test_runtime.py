"""onebit.runtime: predictions, shapes, names, and clear errors for bad input."""

import threading

import numpy as np
import pytest

import onebit.runtime as rt


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 28, 28)).astype(np.float32)


def test_shapes_names_and_metadata(fresh_model_file):
    m = rt.Model(fresh_model_file, threads=2)
    assert m.input_shape == [1, 28, 28]
    assert m.output_shape == [10]
    assert m.metadata.get("model") == "larq-mnist"
    assert m.output_name  # the training-side layer that produces the logits
    assert m.binary_macs_per_image > 0
    assert "larq-mnist.obnn" in repr(m)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_predict_shapes_and_threads_agree(fresh_model_file, batch):
    x = images(batch)
    one = rt.Model(fresh_model_file, threads=1).predict(x)
    two = rt.Model(fresh_model_file, threads=2).predict(x)
    assert one.shape == (batch, 10) and one.dtype == np.float32
    np.testing.assert_array_equal(one, two)
    # Each image alone gives its row of the batch.
    np.testing.assert_array_equal(rt.Model(fresh_model_file).predict(x[:1]), one[:1])


def test_empty_batch(fresh_model_file):
    y = rt.Model(fresh_model_file).predict(np.zeros((0, 1, 28, 28), np.float32))
    assert y.shape == (0, 10) and y.dtype == np.float32


def test_predict_does_not_modify_or_keep_input(fresh_model_file):
    m = rt.Model(fresh_model_file)
    x = images(4)
    before = x.copy()
    y1 = m.predict(x)
    np.testing.assert_array_equal(x, before)
    y2 = m.predict(x)
    assert not np.shares_memory(y1, y2)  # each call returns its own buffer
    np.testing.assert_array_equal(y1, y2)


def test_concurrent_predict_from_threads(fresh_model_file):
    m = rt.Model(fresh_model_file)
    x = images(8, seed=1)
    expected = m.predict(x)
    results = [None] * 4

    def work(i):
        results[i] = m.predict(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize("bad,error,words", [
    (lambda x: x.astype(np.float64), TypeError, ["float32", "float64"]),
    (lambda x: x.astype(np.int32), TypeError, ["float32", "int32"]),
    (lambda x: x[0], ValueError, ["(batch, 1, 28, 28)", "(1, 28, 28)"]),
    (lambda x: x.reshape(2, 1, 56, 14), ValueError, ["(batch, 1, 28, 28)", "(2, 1, 56, 14)"]),
    (lambda x: x.reshape(2, 784), ValueError, ["(batch, 1, 28, 28)", "(2, 784)"]),
    (lambda x: np.asfortranarray(x), ValueError, ["C-contiguous"]),
    (lambda x: x.tolist(), TypeError, ["numpy.ndarray", "list"]),
    (lambda x: None, TypeError, ["numpy.ndarray"]),
])
def test_bad_input_raises_clear_errors(fresh_model_file, bad, error, words):
    m = rt.Model(fresh_model_file)
    with pytest.raises(error) as e:
        m.predict(bad(images(2)))
    for w in words:
        assert w in str(e.value)


def test_strided_view_is_refused(fresh_model_file):
    m = rt.Model(fresh_model_file)
    x = images(4)[::2]
    with pytest.raises(ValueError, match="ascontiguousarray"):
        m.predict(x)
    m.predict(np.ascontiguousarray(x))


def test_non_finite_input(fresh_model_file):
    x = images(2)
    x[1, 0, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"image 1, channel 0, row 3, column 4\) is NaN"):
        rt.Model(fresh_model_file).predict(x)
    y = rt.Model(fresh_model_file, allow_non_finite=True).predict(x)
    assert y.shape == (2, 10)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.obnn")
    with pytest.raises(rt.ModelError, match="nope.obnn: cannot open for reading"):
        rt.Model(path)
    assert issubclass(rt.ModelError, RuntimeError)


def test_truncated_and_corrupt_files(fresh_model_file, tmp_path):
    data = open(fresh_model_file, "rb").read()
    truncated = tmp_path / "truncated.obnn"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(rt.ModelError, match="truncated.obnn"):
        rt.Model(str(truncated))
    corrupt = bytearray(data)
    corrupt[len(data) - 9] ^= 0xFF  # a payload byte: the checksum catches it
    path = tmp_path / "corrupt.obnn"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(rt.ModelError, match="corrupt.obnn: field 'payload_crc32'"):
        rt.Model(str(path))
    garbage = tmp_path / "garbage.obnn"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(rt.ModelError, match="garbage.obnn"):
        rt.Model(str(garbage))


def test_bad_threads(fresh_model_file):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        rt.Model(fresh_model_file, threads=0)


def test_read_only_input_is_read_in_place(fresh_model_file):
    m = rt.Model(fresh_model_file)
    x = images(3)
    expected = m.predict(x)
    x.flags.writeable = False
    np.testing.assert_array_equal(m.predict(x), expected)


def test_predict_releases_the_gil(fresh_model_file):
    m = rt.Model(fresh_model_file)
    x = images(10000, seed=2)
    started = threading.Event()

    def work():
        started.set()
        m.predict(x)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    count = 0
    while t.is_alive():  # runs only while predict does not hold the GIL
        count += 1
    t.join()
    assert count > 100000, count
