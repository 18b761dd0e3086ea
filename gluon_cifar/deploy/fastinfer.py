"""Fast CPU inference for the predict stage: a fully fused MKLDNN graph, INT8, flip TTA, and decoding
overlapped with compute. Same exported files in, same predictions out (INT8: within the agreement it reports).

MXNet 1.9.1's MKLDNN pass fuses Convolution+BatchNorm+ReLU(+sum) only for the legacy operators
`Activation` and `elemwise_add`; NumPy mode exports `_npx_relu` and `_npi_add`, so the exported graph is
renamed first (same weights, outputs within 1e-5). INT8 uses `quantize_model_mkldnn` on that graph,
calibrated on training images; the output layer stays FP32.
"""
import os
import tempfile

import mxnet as mx
import numpy as onp

from gluon_cifar.deploy.export import check_exported, import_block, legacy_symbol, without_prefixes
from gluon_cifar.errors import InputError
from gluon_cifar.images import INPUT_SHAPE, decode_batch, list_images, normalize, prefetch


def _symbol_block(sym, params, ctx):
    """A NumPy-mode SymbolBlock of a legacy `sym` and its {'arg:name'/'aux:name': NDArray} parameters."""
    with tempfile.TemporaryDirectory() as folder:
        sym.save(os.path.join(folder, "net-symbol.json"))
        mx.nd.save(os.path.join(folder, "net-0000.params"), params)
        return import_block(os.path.join(folder, "net-symbol.json"), os.path.join(folder, "net-0000.params"), ctx)


def load_fast(prefix, batch_size, calib_images=None, calib_mode="naive", ctx=mx.cpu(), tta="none"):
    """Reopen an export as a fused (or, given `calib_images`, INT8) graph for batches of `batch_size`.

    `calib_images`: uint8 (N, 32, 32, 3) training images for INT8 calibration. With tta 'flip' the graph
    takes 2 * `batch_size` images: a batch and its mirror images, in one pass. Returns (net, classes).
    """
    files, classes = check_exported(prefix)
    sym = legacy_symbol(files["symbol"])  # the forms MKLDNN fuses
    params = mx.nd.load(files["params"])
    if calib_images is not None:
        sym, params = quantize(sym, params, calib_images, calib_mode, ctx)
    net = _symbol_block(sym, params, ctx)
    graph_batch = batch_size * (2 if tta == "flip" else 1)
    net.optimize_for(mx.np.zeros((graph_batch,) + INPUT_SHAPE, ctx=ctx), backend="MKLDNN",
                     static_alloc=True, static_shape=True)
    return net, classes


def quantize(sym, params, calib_images, calib_mode, ctx):
    """INT8 graph and parameters of a fusable FP32 graph, calibrated on `calib_images` (uint8 NHWC)."""
    from mxnet.contrib.quantization import quantize_model_mkldnn
    aux_names = set(sym.list_auxiliary_states())
    named = without_prefixes(params)
    args = {name: v for name, v in named.items() if name not in aux_names}
    auxs = {name: v for name, v in named.items() if name in aux_names}
    calib = mx.io.NDArrayIter(normalize(calib_images).as_nd_ndarray(), batch_size=min(64, len(calib_images)))
    qsym, qargs, qauxs = quantize_model_mkldnn(
        sym, args, auxs, label_names=(), ctx=ctx, calib_mode=calib_mode, calib_data=calib,
        num_calib_examples=len(calib_images), quantized_dtype="auto",
        excluded_op_names=["_sg_mkldnn_fully_connected"])  # keep the logits in FP32
    qparams = {**{f"arg:{k}": v for k, v in qargs.items()}, **{f"aux:{k}": v for k, v in qauxs.items()}}
    return qsym.get_backend_symbol("MKLDNN_QUANTIZE"), qparams


def predict_fast(net, image_dir, batch_size, ctx=mx.cpu(), tta="none"):
    """`predict` over a folder of `<id>.png` for a net from `load_fast` (made with the same `tta`):
    returns (ids, class indices).

    Batch i+1 is decoded in a thread and queued to the engine while the net computes batch i; the last
    batch is padded to `batch_size` so the graph keeps one static shape. With tta 'flip' each batch goes
    through the graph together with its mirror images, and each image's two logits are averaged, as
    `predict.predict_logits` does.
    """
    items = list_images(image_dir)
    if not items:
        raise InputError(f"{image_dir}: no images")
    paths = [path for _, path in items]

    def batches():
        for start in range(0, len(paths), batch_size):
            x = decode_batch(paths[start:start + batch_size])
            if len(x) < batch_size:
                x = onp.concatenate([x, onp.zeros((batch_size - len(x),) + x.shape[1:], x.dtype)])
            yield onp.concatenate([x, x[:, :, ::-1]]) if tta == "flip" else x

    def classes_of(x):
        y_hat = net(normalize(x, ctx))
        if tta == "flip":
            y_hat = (y_hat[:batch_size] + y_hat[batch_size:]) / 2
        return y_hat.argmax(axis=1).astype("int32")

    pending = []  # results not yet copied back: batch i+1 is queued before batch i is waited for
    for x in prefetch(batches()):  # MXNet calls stay in this thread
        pending.append(classes_of(x))
        if len(pending) > 1:
            pending[-2] = pending[-2].asnumpy()
    pending[-1] = pending[-1].asnumpy()
    return [image_id for image_id, _ in items], onp.concatenate(pending)[:len(items)].tolist()


def read_calibration_images(folder, count):
    """The first `count` images of a flat folder of training `<id>.png` files, in id order, as uint8 NHWC."""
    items = list_images(folder)[:count]
    if not items:
        raise InputError(f"{folder}: no images to calibrate INT8 with")
    return decode_batch([path for _, path in items])
