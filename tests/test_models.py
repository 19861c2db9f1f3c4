import numpy as np
import pytest

from harness.models import ModelSpec, model_spec


def test_mlp_shapes_and_counts():
    spec = ModelSpec("mlp")
    assert spec.param_shapes == {
        "dense0.kernel": (784, 512), "dense0.bias": (512,),
        "dense1.kernel": (512, 512), "dense1.bias": (512,),
        "dense2.kernel": (512, 10), "dense2.bias": (10,),
    }
    assert spec.param_count == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert spec.forward_macs == 784 * 512 + 512 * 512 + 512 * 10
    # forward + weight gradients of all three layers, input gradients of the last two: 3.21 MFLOP
    assert spec.flops_per_sample == 2 * (3 * spec.forward_macs - 784 * 512) == 3_209_216


def test_cnn_shapes_follow_valid_convolutions_and_floor_pooling():
    spec = ModelSpec("cnn", dropout=0.5)
    shapes = spec.param_shapes
    assert shapes["conv0.kernel"] == (3, 3, 1, 32)  # HWIO
    assert shapes["conv1.kernel"] == (3, 3, 32, 64)
    assert shapes["dense0.kernel"] == (5 * 5 * 64, 128)  # 28 -> 26 -> 13 -> 11 -> 5
    assert shapes["dense1.kernel"] == (128, 10)
    assert spec.param_count == 225_034  # keras.io mnist_convnet has the same count with dense 128
    conv = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 9 * 32
    assert spec.forward_macs == conv + 1600 * 128 + 128 * 10
    assert spec.layer_macs[0] == 26 * 26 * 32 * 9  # the first convolution: no input gradient
    assert spec.flops_per_sample == 2 * (3 * spec.forward_macs - 26 * 26 * 32 * 9) == pytest.approx(15.40e6, rel=1e-3)


def test_sizes_are_configurable():
    spec = model_spec("cnn", channels=[4, 8], dense=16)
    assert spec.param_shapes["dense0.kernel"] == (5 * 5 * 8, 16)
    assert model_spec("mlp", hidden=[64]).param_shapes["dense1.kernel"] == (64, 10)


def test_init_is_seeded_glorot_uniform_with_zero_biases():
    spec = ModelSpec("cnn")
    a, b, c = spec.init_params(0), spec.init_params(0), spec.init_params(1)
    for name, shape in spec.param_shapes.items():
        assert a[name].shape == shape and a[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["conv1.kernel"], c["conv1.kernel"])
    assert not a["dense0.bias"].any()
    limit = np.sqrt(6 / (9 * 32 + 9 * 64))  # fan_in = 3*3*32, fan_out = 3*3*64
    kernel = a["conv1.kernel"]
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit


def test_flops_count_no_gradient_for_the_images():
    """A one-layer model has no input gradient at all: forward and weight gradient, 4 FLOPs per MAC."""
    spec = model_spec("mlp", hidden=[])
    assert spec.flops_per_sample == 4 * 784 * 10


def test_optimizer_settings_no_framework_could_map_are_refused():
    from harness.models import OptimizerSpec

    for settings, phrase in [(dict(name="rmsprop"), "unknown optimizer"),
                             (dict(name="adam", weight_decay=0.1), "only for adamw"),
                             (dict(name="sgd", nesterov=True), "nesterov needs"),
                             (dict(name="adam", momentum=0.9), "momentum is an sgd setting")]:
        with pytest.raises(ValueError, match=phrase):
            OptimizerSpec(**settings)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'gru': use 'mlp', 'cnn', 'rnn', 'vit'"):
        ModelSpec("gru")


def test_a_spec_is_built_by_its_models_name_and_keeps_its_kind_when_changed():
    from dataclasses import replace

    from harness.models import FeedForwardSpec, RecurrentSpec, TransformerSpec

    kinds = {name: type(ModelSpec(name)) for name in ("mlp", "cnn", "rnn", "vit")}
    assert kinds == {"mlp": FeedForwardSpec, "cnn": FeedForwardSpec, "rnn": RecurrentSpec, "vit": TransformerSpec}
    changed = replace(model_spec("vit", heads=2), dropout=0.3)
    assert isinstance(changed, TransformerSpec) and changed.heads == 2 and changed.dropout == 0.3
    assert model_spec("rnn", hidden=64) == ModelSpec("rnn", hidden=64) != ModelSpec("rnn")


def test_lstm_shapes_counts_and_flops():
    spec = model_spec("rnn")
    assert spec.hidden == 128 and spec.dropout == 0.1
    assert spec.param_shapes == {"lstm.kernel": (28, 512), "lstm.recurrent_kernel": (128, 512), "lstm.bias": (512,),
                                 "classifier.kernel": (128, 10), "classifier.bias": (10,)}
    assert spec.param_count == 28 * 512 + 128 * 512 + 512 + 128 * 10 + 10 == 81_674
    projection, recurrent, classifier = 28 * 28 * 512, 128 * 512, 128 * 10  # MACs per sample
    # the input projection: forward and weight gradient; the recurrent product: forward and weight gradient at
    # each of the 28 steps, input gradient at 27 (h_0 is a constant); the classifier all three
    expected = 2 * (2 * projection + (28 + 28 + 27) * recurrent + 3 * classifier)
    assert spec.flops_per_sample == expected == 12_492_288


def test_lstm_init_is_keras_s_glorot_orthogonal_and_forget_bias_one():
    spec = model_spec("rnn", hidden=16)
    params, again = spec.init_params(0), spec.init_params(0)
    assert all(np.array_equal(params[k], again[k]) and params[k].dtype == np.float32 for k in params)
    recurrent = params["lstm.recurrent_kernel"].astype(np.float64)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(16), atol=1e-6)  # orthonormal rows
    bias = params["lstm.bias"].reshape(4, 16)  # gates i, f, g, o
    assert (bias[1] == 1).all() and not bias[[0, 2, 3]].any()
    limit = np.sqrt(6 / (28 + 64))
    assert limit * 0.95 < np.abs(params["lstm.kernel"]).max() <= limit


def test_vit_shapes_counts_and_flops():
    spec = model_spec("vit")
    assert (spec.width, spec.depth, spec.heads, spec.mlp, spec.patch, spec.dropout) == (64, 2, 4, 128, 7, 0.2)
    assert spec.tokens == 17 and spec.head_width == 16 and spec.epsilon == 1e-6
    shapes = spec.param_shapes
    assert list(shapes)[:4] == ["patch.kernel", "patch.bias", "embedding.class_token", "embedding.position"]
    assert shapes["patch.kernel"] == (7, 7, 1, 64) and shapes["embedding.position"] == (17, 64)
    assert shapes["block1.query.kernel"] == (64, 64) and shapes["block1.mlp0.kernel"] == (64, 128)
    assert list(shapes)[-4:] == ["norm.scale", "norm.bias", "classifier.kernel", "classifier.bias"]
    assert "block0.query.bias" not in shapes  # attention has no biases (the key's could not be trained)
    block = 2 * 64 + 4 * 64 * 64 + 2 * 64 + 64 * 128 + 128 + 128 * 64 + 64
    assert spec.param_count == 49 * 64 + 64 + 64 + 17 * 64 + 2 * block + 2 * 64 + 64 * 10 + 10 == 71_562
    patch, classifier = 16 * 49 * 64, 64 * 10
    projections, mlp, attention = 17 * 64 * 4 * 64, 2 * 17 * 64 * 128, 2 * 17 * 17 * 64  # a block's MACs
    # every product 3x (forward, weight gradient, input gradient) but the patch projection's (2x); attention's
    # two activation products 3x too (forward, a gradient for each operand)
    expected = 2 * (2 * patch + 2 * 3 * (projections + mlp + attention) + 3 * classifier)
    assert spec.flops_per_sample == expected == 7_333_120


def test_vit_init_and_sizes_that_describe_no_network():
    params = model_spec("vit", width=32, heads=2).init_params(1)
    assert not params["embedding.class_token"].any() and not params["block0.mlp0.bias"].any()
    assert (params["block0.norm1.scale"] == 1).all() and not params["norm.bias"].any()
    assert 0.015 < params["embedding.position"].std() < 0.025
    limit = np.sqrt(6 / (49 + 32))  # the patch kernel as the dense layer of a flattened patch
    assert limit * 0.9 < np.abs(params["patch.kernel"]).max() <= limit
    for sizes, phrase in [({"width": 30, "heads": 4}, "does not split into 4 heads"),
                          ({"patch": 5}, "does not tile a 28x28 image"), ({"depth": 0}, "depth = 0 must be")]:
        with pytest.raises(ValueError, match=phrase):
            model_spec("vit", **sizes)
    with pytest.raises(ValueError, match="hidden = 0 must be"):
        model_spec("rnn", hidden=0)


def test_learning_rate_decays_by_epoch_in_stairs():
    from harness.models import OptimizerSpec

    spec = OptimizerSpec("adam", lr=1e-3, lr_decay=0.5, steps_per_epoch=10)
    assert [spec.lr_at(t) for t in (0, 9, 10, 25)] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    assert OptimizerSpec(lr=1e-3, lr_decay=0.5).lr_at(100) == 1e-3  # no epoch length: constant
    assert not OptimizerSpec(lr=1e-3, steps_per_epoch=10).decays


def test_kernel_sizes_are_one_for_all_or_one_per_convolution():
    fast = model_spec("cnn", channels=[24, 32], kernel_size=[5, 3], dense=256)
    assert fast.kernel_sizes == (5, 3) and fast.param_shapes["conv0.kernel"] == (5, 5, 1, 24)
    assert fast.param_shapes["dense0.kernel"] == (5 * 5 * 32, 256)  # 28 -> 24 -> 12 -> 10 -> 5
    assert model_spec("cnn", kernel_size=5).kernel_sizes == (5, 5) == ModelSpec("cnn", kernel_size=(5,)).kernel_sizes
    with pytest.raises(ValueError, match="one for all or one per convolution"):
        model_spec("cnn", kernel_size=[3, 3, 3])
    with pytest.raises(ValueError, match="leave no pixel"):
        model_spec("cnn", kernel_size=[13, 13])


def test_a_warm_up_and_cosine_decay_is_set_per_step():
    from harness.models import OptimizerSpec

    spec = OptimizerSpec("adam", lr=1.0, schedule="warmup_cosine", warmup=0.25, lr_start=0.1, lr_end=0.01,
                         total_steps=12, steps_per_epoch=4)
    assert spec.per_step and spec.decays and spec.warmup_steps == 3
    rates = [spec.lr_at(t) for t in range(14)]
    assert rates[:4] == pytest.approx([0.1, 0.4, 0.7, 1.0])  # linear from lr * lr_start to lr over 3 steps
    assert rates[3 + 9 // 2] == pytest.approx(0.01 + 0.99 * (1 + np.cos(np.pi * 4 / 9)) / 2)
    assert rates[12] == rates[13] == pytest.approx(0.01)  # lr * lr_end from the schedule's last step on
    assert all(a > b for a, b in zip(rates[3:12], rates[4:13]))  # the decay never rises
    assert not OptimizerSpec("adam", schedule="warmup_cosine").per_step  # no length: a constant rate
    short = OptimizerSpec("adam", lr=1.0, schedule="warmup_cosine", lr_end=0.05, schedule_epochs=1.5,
                          steps_per_epoch=4, total_steps=12)
    assert short.schedule_steps == 6 and [short.lr_at(t) for t in (6, 11)] == pytest.approx([0.05, 0.05])


def test_schedule_settings_that_clash_are_refused():
    from harness.models import OptimizerSpec

    with pytest.raises(ValueError, match="lr_decay is the epoch_decay schedule's"):
        OptimizerSpec("adam", schedule="warmup_cosine", lr_decay=0.5)
    with pytest.raises(ValueError, match="shape the warmup_cosine schedule"):
        OptimizerSpec("adam", warmup=0.2)
    with pytest.raises(ValueError, match="unknown schedule"):
        OptimizerSpec("adam", schedule="one_cycle")
