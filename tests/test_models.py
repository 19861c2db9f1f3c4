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
    with pytest.raises(ValueError, match="unknown model"):
        ModelSpec("rnn")


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


def test_schedule_settings_that_clash_are_refused():
    from harness.models import OptimizerSpec

    with pytest.raises(ValueError, match="lr_decay is the epoch_decay schedule's"):
        OptimizerSpec("adam", schedule="warmup_cosine", lr_decay=0.5)
    with pytest.raises(ValueError, match="shape the warmup_cosine schedule"):
        OptimizerSpec("adam", warmup=0.2)
    with pytest.raises(ValueError, match="unknown schedule"):
        OptimizerSpec("adam", schedule="one_cycle")
