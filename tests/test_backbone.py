"""The converted ImageNet ResNet-50 and the backbone loader, with the real weights."""

import os

import mxnet as mx
import numpy as np
import pytest
import skimage

from helpers import run_script
from models.checkpoint import load_checkpoint
from models.errors import UserError
from models.pretrained import DEFAULT_LAYER, Backbone, layer_names

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


def parse_classify(stdout):
    """{image base name: [(class, probability), ...]} from `python -m models.pretrained --classify` output."""
    results, current = {}, None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            current = results.setdefault(os.path.basename(line.strip()), [])
        else:
            prob, name = line.split()
            current.append((name, float(prob)))
    return results


def test_imagenet_self_check(weights):
    # Reference: TensorFlow/Keras running the same TF.js package (its own layer graph, BGR + Caffe mean) on the same
    # PIL-bilinear 224x224 images gives Egyptian_cat 0.958, tiger_cat 0.019, tabby 0.017 and espresso 0.987.
    result = run_script("-m", "models.pretrained", "--classify",
                        os.path.join(SKIMAGE_DATA, "chelsea.png"), os.path.join(SKIMAGE_DATA, "coffee.png"))
    assert result.returncode == 0, result.stderr
    top = parse_classify(result.stdout)
    assert [name for name, _ in top["chelsea.png"][:3]] == ["Egyptian_cat", "tiger_cat", "tabby"]
    assert [p for _, p in top["chelsea.png"][:3]] == pytest.approx([0.958, 0.019, 0.017], abs=0.01)
    assert top["coffee.png"][0][0] == "espresso"
    assert top["coffee.png"][0][1] == pytest.approx(0.987, abs=0.01)
    assert len(top["chelsea.png"]) == 5


def test_cut_layer_is_first_relu_of_stage4_unit2(weights):
    symbol, _, _ = load_checkpoint(weights)
    node = symbol.get_internals()[DEFAULT_LAYER]
    assert node.get_children().list_outputs() == ["stage4_unit2_bn1_output"]
    net = Backbone(weights, DEFAULT_LAYER, batch_size=4)
    assert net.output_shape == (512, 7, 7)
    codes = net(np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8))
    assert codes.shape == (3, 512, 7, 7) and codes.dtype == np.float32
    assert codes.min() >= 0 and codes.max() > 0  # a ReLU output


def test_model_zoo_layer_names(weights):
    names = layer_names(load_checkpoint(weights)[0])
    assert names[:5] == ["bn_data_output", "conv0_output", "bn0_output", "relu0_output", "pooling0_output"]
    for expected in ("stage1_unit1_sc_output", "stage3_unit6_relu2_output", "stage4_unit3_plus_output",
                     "pool1_output", "flatten0_output", "fc1_output", "softmax_output"):
        assert expected in names


def test_unknown_layer_lists_closest_names(weights):
    with pytest.raises(UserError, match="closest valid names: .*stage4_unit2_relu1_output"):
        Backbone(weights, "stage4_unit2_relu1_outptu")


def write_tiny_checkpoint(prefix):
    """A small random pre-activation network named like the MXNet model-zoo resnet (v2): any checkpoint must do."""
    data = mx.sym.Variable("data")
    x = mx.sym.BatchNorm(data, name="bn_data", fix_gamma=True)
    x = mx.sym.Convolution(x, name="conv0", num_filter=8, kernel=(7, 7), stride=(4, 4), pad=(3, 3), no_bias=True)
    x = mx.sym.Activation(mx.sym.BatchNorm(x, name="stage1_unit1_bn1"), name="stage1_unit1_relu1", act_type="relu")
    x = mx.sym.Convolution(x, name="stage1_unit1_conv1", num_filter=16, kernel=(3, 3), stride=(2, 2), pad=(1, 1))
    x = mx.sym.Pooling(x, name="pool1", global_pool=True, kernel=(1, 1), pool_type="avg")
    x = mx.sym.softmax(mx.sym.FullyConnected(mx.sym.Flatten(x), name="fc1", num_hidden=3), name="softmax")
    module = mx.mod.Module(x, data_names=["data"], label_names=None)
    module.bind(data_shapes=[("data", (1, 3, 224, 224))], for_training=False)
    mx.random.seed(0)
    module.init_params(mx.init.Xavier())
    module.save_checkpoint(prefix, 0)


def test_any_checkpoint_works_as_backbone(tmp_path):
    prefix = str(tmp_path / "tiny")
    write_tiny_checkpoint(prefix)
    net = Backbone(prefix, "stage1_unit1_relu1_output", batch_size=2)
    assert net.output_shape == (8, 56, 56)
    assert net(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 8, 56, 56)


def test_missing_checkpoint_says_how_to_fix(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        Backbone(str(tmp_path / "nothing"))
