"""A trained classifier as one ONNX file, to run where MXNet does not (``models.onnx_predict``, ONNX Runtime, TensorRT).

    python -m models.export MODELS_DIR OUT.onnx [--epoch last|best|N]

One graph from the images to what ``models.predict`` computes of them: input ``images``, a float32 batch N x 3 x 224
x 224 of RGB values 0..255 (N free), as the backbone takes them; the backbone cut where the head's codes were cut;
the head of its layout (its pooling or flattening and standardisation inside; ``both``: the mean of its branches'
class probabilities); the recalibration of the probabilities; outputs ``probabilities`` (N x classes, in the order
of the metadata's ``classes``) and ``training_distance`` (N, the input check's distance; an image is unlike the
training films above the metadata's ``input_check.threshold``). What a runner needs and must not guess goes into the
file's metadata (key ``xvision_mx``, JSON) and a sidecar OUT.json: the classes, the positive class and the decision
threshold, the image view (size, resize mode, field and lung box, gray repeated to RGB) and, under ``input.how``, every
rule of its reading in words and numbers another program can follow (``models.inputspec``), the input check, where
the probabilities come from, digests of the backbone, the head and its training data, the file format's version and
the project's commit.

The backbone runs in fp32: codes made with --bf16 or --int8 come from networks that ONNX does not express here (an
int8 graph of oneDNN's fused operators, bfloat16 convolutions), so such a head gets fp32 codes in the ONNX file, which
differ from its training codes as the precisions do (cosine ~0.999 bf16, ~0.98 int8); the metadata says so. The export
checks itself: ONNX Runtime and MXNet score the same batch, and a file whose probabilities or distances differ by more
than 1e-4 is not written.
"""

import argparse
import json
import os

import numpy as np

from models import head
from models.calibration import EPSILON
from models.checkpoint import load_checkpoint
from models.cli import add_backbone_argument, add_batch_size_argument, add_epoch_argument
from models.errors import UserError, run_cli
from models.fileio import atomic_path, check_output_folder, write_json
from models.headfolder import FORMAT, load_head
from models.images import INPUT_SIZE, View
from models.inputcheck import training_images
from models.inputspec import input_how
from models.onnx_predict import FORMAT as EXPORT_FORMAT
from models.onnx_predict import DISTANCE, INPUT, METADATA_KEY, PROBABILITIES
from models.provenance import record
from models.runtime import setup_runtime

TOLERANCE = 1e-4  # the export's self-check: largest difference to MXNet allowed, probabilities and distances alike


def _array(graph, name, values, dtype=np.float32):
    """Add ``values`` to ``graph`` as an initializer called ``name``; returns the name."""
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
    return name


def _node(graph, op, inputs, output, **attributes):
    from onnx import helper

    graph.node.append(helper.make_node(op, inputs, [output], name=output, **attributes))
    return output


def add_recalibration(graph, proba, fitted):
    """Nodes turning the head's class probabilities ``proba`` into those the Recalibration ``fitted`` gives (in ONNX
    operators; None: the same); returns the output's name."""
    if fitted is None:
        return _node(graph, "Identity", [proba], PROBABILITIES)
    low, high = _array(graph, "recal_low", EPSILON), _array(graph, "recal_high", 1 - EPSILON)
    if fitted.method_ == "temperature":
        clipped = _node(graph, "Clip", [proba, low, _array(graph, "recal_one", 1.0)], "recal_clipped")
        scaled = _node(graph, "Div", [_node(graph, "Log", [clipped], "recal_log"),
                                      _array(graph, "recal_temperature", fitted.temperature_)], "recal_scaled")
        return _node(graph, "Softmax", [scaled], PROBABILITIES, axis=1)
    positive = _node(graph, "Gather", [proba, _array(graph, "recal_positive", [fitted.positive_], np.int64)],
                     "recal_p", axis=1)
    p = _node(graph, "Clip", [positive, low, high], "recal_clipped")
    one = _array(graph, "recal_one", 1.0)
    logit = _node(graph, "Sub", [_node(graph, "Log", [p], "recal_log_p"),
                                 _node(graph, "Log", [_node(graph, "Sub", [one, p], "recal_q")], "recal_log_q")],
                  "recal_logit")
    mapped = _node(graph, "Add", [_node(graph, "Mul", [logit, _array(graph, "recal_slope", fitted.slope_)],
                                        "recal_scaled"), _array(graph, "recal_intercept", fitted.intercept_)],
                   "recal_z")
    recalibrated = _node(graph, "Sigmoid", [mapped], "recal_positive_p")
    other = _node(graph, "Sub", [one, recalibrated], "recal_other_p")
    columns = [other, recalibrated] if fitted.positive_ == 1 else [recalibrated, other]
    return _node(graph, "Concat", columns, PROBABILITIES, axis=1)


def add_distance(graph, codes, grid, check):
    """Nodes giving the input check's distance of each image from its ``codes`` (N x C x ``grid``), in float64 as
    models.inputcheck computes it; returns the output's name."""
    from onnx import TensorProto

    as_double = _node(graph, "Cast", [codes], "check_codes", to=TensorProto.DOUBLE)
    cells = int(np.prod(grid))  # ReduceSum takes its axes as an input in every opset from 13, ReduceMean from 18 only
    sums = _node(graph, "ReduceSum", [as_double, _array(graph, "check_grid_axes", [2, 3], np.int64)], "check_sums",
                 keepdims=0)
    means = _node(graph, "Div", [sums, _array(graph, "check_cells", cells, np.float64)], "check_means")
    centred = _node(graph, "Sub", [means, _array(graph, "check_mean", check.mean_, np.float64)], "check_centred")
    weighted = _node(graph, "MatMul", [centred, _array(graph, "check_precision", check.precision_, np.float64)],
                     "check_weighted")
    squared = _node(graph, "ReduceSum", [_node(graph, "Mul", [weighted, centred], "check_products"),
                                         _array(graph, "check_axis", [1], np.int64)], "check_squared", keepdims=0)
    positive = _node(graph, "Max", [squared, _array(graph, "check_zero", 0.0, np.float64)], "check_nonnegative")
    return _node(graph, "Sqrt", [positive], DISTANCE)


def runner_metadata(fitted):
    """What models.onnx_predict (or any runner) reads from the file: everything it must not guess (``fitted``: the
    loaded head, ``headfolder.load_head``)."""
    from models.weights import sha256_of

    meta, epoch, check = fitted.meta_, fitted.epoch_, fitted.input_check_
    head_digest = sha256_of(fitted.params_path_)
    positive, threshold, source = fitted.positive_, fitted.threshold_, fitted.threshold_words_
    precision = meta["backbone"].get("precision") or "fp32"
    view = View.of(meta["backbone"])
    return {
        "format": EXPORT_FORMAT, "head_format": FORMAT, "project_commit": project_commit(),
        "classes": meta["classes"], "positive_class": None if positive is None else meta["classes"][positive],
        "threshold": threshold, "decision": "two classes: the positive class where its probability >= threshold; "
                                            "more: the largest probability" if positive is not None else
                                            "the largest probability", "threshold_by": source,
        "input": {"name": INPUT, "shape": ["N", 3, INPUT_SIZE, INPUT_SIZE], "dtype": "float32",
                  "values": "RGB 0..255, channels first; a gray image repeated into the three channels",
                  "view": dict(view.describe(), field=view.field, lung_box=list(view.box)),
                  "view_how": "models.images.View, spelt out in 'how' for a program of any language",
                  "how": input_how(view)},
        "outputs": {PROBABILITIES: "class probabilities in the order of 'classes'"
                                   + (", recalibrated" if fitted.calibration_ else ", the head's own"),
                    DISTANCE: None if check is None else "the input check's distance of each image"},
        "input_check": None if check is None else {"threshold": check.threshold_,
                                                   "method": check.record_["method"],
                                                   "training_images": training_images(check.record_)},
        "calibration": meta.get("calibration"),
        "epoch": epoch, "epoch_choice": fitted.epoch_choice_, "layout": meta["head"].get("layout"),
        "backbone": {"model_sha256": meta["backbone"].get("model_sha256"), "layer": meta["backbone"].get("layer"),
                     "precision_trained_on": precision, "precision_in_file": "fp32",
                     "note": None if precision == "fp32" else f"the head was trained on {precision} codes; the file "
                                                              "runs the backbone in fp32 (see models/export.py)"},
        "head_params_sha256": head_digest,
        "provenance": record({"head_params": head_digest, "backbone": meta["backbone"].get("model_sha256")}),
        "training_data_sha256": meta["training"].get("data_sha256"),
    }


def project_commit():
    """The git commit of the code that exported the file, where it runs from a checkout (else None)."""
    from models.provenance import git_commit

    return git_commit(os.path.dirname(os.path.abspath(__file__)))["commit"]


def classifier_symbol(fitted, prefix):
    """(MXNet symbol of the class probabilities and of the codes, every weight by name): the backbone checkpoint
    ``prefix`` cut as head.json records, then the loaded head ``fitted``."""
    import mxnet as mx

    from models.pretrained import cut

    symbol, args, aux = load_checkpoint(prefix)
    codes = cut(symbol, fitted.meta_["backbone"]["layer"])
    net = head.with_weights(fitted.meta_, fitted.net_.collect_params())
    # each branch's softmax, averaged: what the head's log-mean-exp output gives after its softmax, in operators
    # MXNet's exporter writes validly at onnx's default opset (its ReduceMax keeps an attribute opset 18 dropped)
    branches = [mx.sym.softmax(part(codes), axis=1) for part in head.branches(net)]
    proba = branches[0] if len(branches) == 1 else mx.sym.ElementWiseSum(*branches) / len(branches)
    weights = dict(args, **aux, **{name: param.data() for name, param in net.collect_params().items()})
    return proba, codes, weights


def export_classifier(models_dir, out_path, epoch="last", batch_size=4, backbone=None, log=print):
    """Write the ONNX file of the head in ``models_dir`` (and OUT.json beside it); returns its metadata. Raises
    UserError for a models folder without a finished epoch, a backbone checkpoint that is not the recorded one, an
    OUT that cannot be written, and an export that does not reproduce MXNet's numbers."""
    import mxnet as mx
    import onnx

    check_output_folder(os.path.dirname(os.path.abspath(out_path)), "the folder of OUT")
    if os.path.isdir(out_path):
        raise UserError(f"OUT {out_path!r} is a folder: give the path of the .onnx file to write")
    fitted = load_head(models_dir, epoch)
    meta = fitted.meta_
    if len(meta["code_shape"]) != 3:
        raise UserError(f"the head in {models_dir} was trained on codes of shape {meta['code_shape']}; the export "
                        f"needs codes of channels x height x width (a --layer with a spatial output)")
    from models.pretrained import recorded_checkpoint

    prefix = recorded_checkpoint(meta["backbone"], models_dir, backbone)  # found by head.json's sha256: ~100 MB read
    proba, codes, weights = classifier_symbol(fitted, prefix)
    check, recalibrated = fitted.input_check_, fitted.calibration_
    metadata = runner_metadata(fitted)
    with atomic_path(out_path) as tmp:
        mx.onnx.export_model(mx.sym.Group([proba, codes]), weights, in_shapes=[(1, 3, INPUT_SIZE, INPUT_SIZE)],
                             in_types=[np.float32], onnx_file_path=tmp, dynamic=True,
                             dynamic_input_shapes=[(None, 3, INPUT_SIZE, INPUT_SIZE)])
        model = onnx.load(tmp)
        graph = model.graph
        names = {output.name for output in graph.output}
        proba_name, codes_name = (name.removesuffix("_output") for name in (proba.name, codes.name))
        if names != {proba_name, codes_name}:
            raise RuntimeError(f"MXNet's exporter named the outputs {sorted(names)}, not {proba_name}, {codes_name}")
        (images,) = [i for i in graph.input if i.name == "data"]
        images.name = INPUT  # the input's name, as the metadata says
        del graph.input[:]  # MXNet's exporter lists every weight as an input too: then no runtime folds constants
        graph.input.append(images)
        for node in graph.node:
            node.input[:] = [INPUT if name == "data" else name for name in node.input]
        outputs = [onnx.helper.make_tensor_value_info(add_recalibration(graph, proba_name, recalibrated),
                                                      onnx.TensorProto.FLOAT, ["N", len(meta["classes"])])]
        if check is not None:
            distance = add_distance(graph, codes_name, meta["code_shape"][1:], check)
            outputs.append(onnx.helper.make_tensor_value_info(distance, onnx.TensorProto.DOUBLE, ["N"]))
        del graph.output[:]
        graph.output.extend(outputs)
        _drop_unused_initializers(graph)
        onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata)})
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        compared = self_check(tmp, fitted, prefix, batch_size)
        log(f"checked: ONNX Runtime against MXNet on {compared['images']} images: probabilities within "
            f"{compared['probabilities']:.1e}" + (f", distances within {compared['distances']:.1e}"
                                                  if "distances" in compared else ""))
    write_json(os.path.splitext(out_path)[0] + ".json", metadata)
    return metadata


def _drop_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def self_check(path, fitted, prefix, batch_size):
    """Score one batch of made-up images (smooth random gray fields, 0..255) with ONNX Runtime and with the MXNet path
    models.predict takes (``fitted``: the loaded head); UserError where they differ by more than TOLERANCE. Returns
    the largest differences."""
    import onnxruntime

    from models.pretrained import Backbone

    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (batch_size, 1, 8, 8)).astype(np.float32)
    images = np.repeat(np.kron(small, np.ones((1, 1, INPUT_SIZE // 8, INPUT_SIZE // 8), np.float32)), 3, axis=1)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    found = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT: images})))
    made, check = fitted.meta_["backbone"], fitted.input_check_
    backbone = Backbone(prefix, made["layer"], batch_size=batch_size,
                        model_sha256=made["model_sha256"])  # checked already: not hashed again
    codes = backbone.run(images, batch_size)
    proba = fitted.predict_proba(codes)
    differences = {"images": batch_size, "probabilities": float(np.abs(found[PROBABILITIES] - proba).max())}
    if check is not None:
        expected = check.distance(codes)
        differences["distances"] = float(np.max(np.abs(found[DISTANCE] - expected) / np.maximum(1.0, expected)))
    worst = max(value for key, value in differences.items() if key != "images")
    if worst > TOLERANCE:
        raise UserError(f"the ONNX export does not reproduce MXNet's numbers (largest difference {worst:.2e}, "
                        f"{TOLERANCE} allowed): nothing written; please report it with the models folder")
    return differences


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.export",
                                     description=__doc__.split("\n\n")[0] + " " + " ".join(
                                         __doc__.split("\n\n")[2].split()))
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder written by train_model.py")
    parser.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write (OUT.json beside it)")
    add_epoch_argument(parser, "to export")
    add_backbone_argument(parser)
    add_batch_size_argument(parser, default=4, what="images of the self-check batch")
    args = parser.parse_args(argv)
    setup_runtime()
    metadata = export_classifier(args.models_dir, args.out, args.epoch, args.batch_size, args.backbone)
    threshold = "" if metadata["positive_class"] is None else \
        f", '{metadata['positive_class']}' from p >= {metadata['threshold']:.4f}"
    print(f"wrote {args.out} (epoch {metadata['epoch']}, classes {metadata['classes']}{threshold}); run it with: "
          f"python -m models.onnx_predict {args.out} IMAGE_OR_FOLDER...")


if __name__ == "__main__":
    run_cli(main)
