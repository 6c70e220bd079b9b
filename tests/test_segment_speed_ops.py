"""The segmentation training's speed paths equal their plain references (correctness only, never timings)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from cytolens.segment import deeplab
from cytolens.segment.augment import Augmenter
from cytolens.segment.concat import concat_channels
from cytolens.segment.cpu_training import channels_last_cpu_training
from cytolens.segment.deeplab import DepthwiseConv2d
from cytolens.segment.dense_block import conv3x3_weight_grad, dense_block_stack, fused_path_applies
from cytolens.segment.pointwise import PointwiseConv2d
from cytolens.segment.sampling import PatchDataset, Prefetcher, collate_patches
from cytolens.segment.tiramisu import FastDropout, FCDenseNet, _DenseBlock, _match_size


def _dataset(seed: int = 3) -> PatchDataset:
    rng = np.random.default_rng(0)
    images = [rng.random((40, 48), dtype=np.float32) for _ in range(2)]
    labels = [rng.integers(0, 3, (40, 48)).astype(np.uint8) for _ in range(2)]
    return PatchDataset(images, labels, patches_per_epoch=10, num_classes=3, patch_size=16,
                        augment=Augmenter(max_shift=4, elastic_probability=0.5), seed=seed)


def test_prefetcher_yields_the_source_in_order_then_stops() -> None:
    items = list(Prefetcher(iter(range(25)), depth=3))
    assert items == list(range(25))


def test_prefetched_batches_equal_the_plain_loader() -> None:
    dataset = _dataset()
    batches = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    plain = list(torch.utils.data.DataLoader(dataset, batch_sampler=batches))
    fetched = list(Prefetcher(torch.utils.data.DataLoader(dataset, batch_sampler=batches,
                                                          collate_fn=collate_patches)))
    assert len(fetched) == len(plain) == 4
    for (x0, y0), (x1, y1) in zip(plain, fetched):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_patches_are_collated_without_torchs_parallel_copies(monkeypatch) -> None:
    dataset = _dataset()
    items = [dataset[i] for i in range(4)]
    expected = torch.utils.data.default_collate(items)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("torch.stack runs in an OpenMP team of the prefetch thread")

    monkeypatch.setattr(torch, "stack", refuse)
    images, labels = collate_patches(items)
    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


def test_prefetcher_reraises_the_source_error_in_the_consumer() -> None:
    def source():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("broken patch")

    fetched = Prefetcher(source())
    assert next(fetched) == 1
    with pytest.raises(ValueError, match="broken patch"):
        next(fetched)
    with pytest.raises(StopIteration):
        next(fetched)


def test_closing_an_unfinished_prefetcher_stops_its_thread() -> None:
    fetched = Prefetcher(iter(range(1000)), depth=1)
    assert next(fetched) == 0
    fetched.close()
    assert not fetched._thread.is_alive()
    assert not any(t.name == "cytolens-prefetch" and t is fetched._thread for t in threading.enumerate())
    with pytest.raises(StopIteration):
        next(fetched)


# -- FC-DenseNet: the growing-stack dense blocks and the cheaper dropout ---------------------------------------


def _reference_tiramisu_forward(model: FCDenseNet, images: torch.Tensor) -> torch.Tensor:
    """The forward pass as first written: cat([features, *new]) per dense layer, cat(new) per block."""
    def block(b, features):  # type: ignore[no-untyped-def]
        new: list[torch.Tensor] = []
        for layer in b.layers:
            new.append(layer(torch.cat([features, *new], dim=1)))
        return torch.cat(new, dim=1)

    features = model.stem(images)
    skips = []
    for down, transition in zip(model.down_blocks, model.transitions_down):
        features = torch.cat([features, block(down, features)], dim=1)
        skips.append(features)
        features = transition(features)
    new = block(model.bottleneck, features)
    for transition, up, skip in zip(model.transitions_up, model.up_blocks, reversed(skips)):
        features = torch.cat([_match_size(transition(new), skip), skip], dim=1)
        new = block(up, features)
    return model.head(torch.cat([features, new], dim=1))


@pytest.mark.parametrize("block_layers", [(2, 3, 2), (2, 1, 2, 3, 1), (3,)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiramisu_stack_forward_and_gradients_equal_the_reference(block_layers: tuple[int, ...],
                                                                  channels_last: bool) -> None:
    torch.manual_seed(0)
    model = FCDenseNet(num_classes=3, in_chans=2, stem_filters=6, growth_rate=4, block_layers=block_layers,
                       dropout=0.0).double()
    images = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    outputs = []
    for forward in (model, lambda x: _reference_tiramisu_forward(model, x)):
        model.zero_grad()
        x = images.clone().requires_grad_()
        out = forward(x)
        out.square().mean().backward()
        outputs.append((out.detach(), x.grad, [p.grad.clone() for p in model.parameters()]))
    (out, gx, grads), (ref, ref_gx, ref_grads) = outputs
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_dense_block_forward_is_only_the_new_maps() -> None:
    model = FCDenseNet(num_classes=3, in_chans=1, stem_filters=5, growth_rate=3, block_layers=(2, 4, 2), dropout=0)
    block = model.bottleneck
    features = torch.randn(1, block.layers[0].norm.num_features, 4, 4)
    stack = block.stack(features)
    assert stack.shape[1] == features.shape[1] + 4 * 3 == features.shape[1] + block.new_channels
    torch.testing.assert_close(stack[:, : features.shape[1]], features)
    torch.testing.assert_close(block(features), stack[:, features.shape[1]:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_keeps_the_rate_scale_layout_and_gradient(dtype: torch.dtype) -> None:
    drop = FastDropout(0.2)
    x = torch.rand(4, 8, 32, 32).add_(0.5).to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = drop(x)
    kept = y != 0
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    # 32,768 draws: the kept share is 0.8 ± 0.011 (5 standard deviations)
    assert abs(kept.float().mean().item() - 0.8) < 0.011
    torch.testing.assert_close(y[kept], (x.detach() * 1.25)[kept])
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.to(dtype) * 1.25)


def test_fast_dropout_is_seeded_by_torch_and_off_in_eval() -> None:
    drop = FastDropout(0.5)
    x = torch.ones(2, 3, 8, 8)
    torch.manual_seed(7)
    first = drop(x)
    torch.manual_seed(7)
    assert torch.equal(drop(x), first)
    assert not torch.equal(drop(x), first)  # the next draw differs
    drop.eval()
    assert torch.equal(drop(x), x)
    # a non-dense view falls back to torch's dropout (same distribution)
    drop.train()
    assert drop(torch.ones(4, 6)[:, ::2]).shape == (4, 3)


def test_tiramisu_state_dict_keys_unchanged_by_the_fast_dropout() -> None:
    model = FCDenseNet(num_classes=3, in_chans=1, stem_filters=4, growth_rate=2, block_layers=(1, 1, 1))
    assert isinstance(model.down_blocks[0].layers[0].drop, FastDropout)
    assert isinstance(model.transitions_down[0].drop, torch.nn.Dropout)
    reference = FCDenseNet(num_classes=3, in_chans=1, stem_filters=4, growth_rate=2, block_layers=(1, 1, 1))
    reference.load_state_dict(model.state_dict())  # strict: the same keys


@pytest.mark.parametrize("channels_last", [True, False])
def test_concat_channels_equals_torch_cat_and_gives_dense_gradients(channels_last: bool) -> None:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    pieces = [torch.randn(2, width, 6, 5, generator=generator).contiguous(memory_format=layout) for width in (3, 4)]
    grad = torch.randn(2, 7, 6, 5, generator=generator).contiguous(memory_format=layout)
    received: dict[str, list[torch.Tensor]] = {"ours": [], "cat": []}

    def inputs(side: str) -> list[torch.Tensor]:
        # Non-leaf inputs, as a BatchNorm's output is: a hook sees the gradient exactly as backward passes it on
        # (a leaf's .grad would be made dense by autograd's accumulation anyway).
        made = [(p.clone().requires_grad_() * 1.0) for p in pieces]
        for tensor in made:
            tensor.register_hook(received[side].append)
        return made

    out = concat_channels(inputs("ours"))
    reference = torch.cat(inputs("cat"), dim=1)
    assert torch.equal(out, reference)
    out.backward(grad)
    reference.backward(grad)
    for mine, theirs in zip(received["ours"], received["cat"]):
        assert torch.equal(mine, theirs)
        # Dense in the gradient's own layout, where torch.cat's backward hands out strided views.
        assert mine.is_contiguous(memory_format=layout)
        assert not theirs.is_contiguous(memory_format=layout)


def test_concat_channels_without_gradients_is_plain_cat() -> None:
    pieces = [torch.ones(1, 2, 3, 3), torch.zeros(1, 1, 3, 3)]
    with torch.no_grad():
        out = concat_channels([p.requires_grad_() for p in pieces])
    assert out.grad_fn is None and out.shape == (1, 3, 3, 3)


# -- FC-DenseNet: the one-buffer dense block (segment/dense_block.py) ------------------------------------------


def _plain_stack(block: _DenseBlock, features: torch.Tensor) -> torch.Tensor:
    """``block.stack`` the way it runs without the one-buffer path: one cat per layer."""
    for layer in block.layers:
        features = torch.cat([features, layer(features)], dim=1)
    return features


@pytest.mark.parametrize("momentum", [0.1, None])
def test_one_buffer_dense_block_equals_the_layer_loop(momentum: float | None) -> None:
    torch.manual_seed(0)
    fused = _DenseBlock(5, 3, 4, dropout=0.3).double()
    for layer in fused.layers:
        layer.norm.momentum = momentum
        torch.nn.init.uniform_(layer.norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(layer.norm.bias, -0.5, 0.5)
    plain = copy.deepcopy(fused)
    images = torch.randn(2, 5, 9, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for block, run in ((fused, fused.stack), (plain, lambda x: _plain_stack(plain, x))):
        torch.manual_seed(11)  # the same dropout masks, drawn in the same order
        x = images.clone().requires_grad_()
        out = run(x)
        weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
        (out * weights).sum().backward()
        results.append((out.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()},
                        {n: b.clone() for n, b in block.named_buffers()}))
    (out, gx, grads, buffers), (ref, ref_gx, ref_grads, ref_buffers) = results
    assert fused_path_applies(images, True)
    assert (out == 0).any()  # dropout did drop: the masks were drawn and matched
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12, msg=name)
    for name in buffers:  # running statistics and num_batches_tracked, as BatchNorm's forward leaves them
        torch.testing.assert_close(buffers[name], ref_buffers[name], rtol=1e-12, atol=1e-14, msg=name)


def test_one_buffer_dense_block_passes_gradcheck() -> None:
    torch.manual_seed(1)
    block = _DenseBlock(3, 2, 2, dropout=0.0).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    params = [p for layer in block.layers for p in (layer.norm.weight, layer.norm.bias, layer.conv.weight)]

    def run(features: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return dense_block_stack(features, block.layers, lambda like, p: like)

    assert torch.autograd.gradcheck(run, (x.requires_grad_(), *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(("channels", "out_channels", "height", "width"), [(7, 3, 6, 5), (2, 4, 1, 9)])
def test_conv3x3_weight_grad_equals_the_convolution_backward(channels: int, out_channels: int, height: int,
                                                             width: int) -> None:
    torch.manual_seed(2)
    # A channel slice of a wider channels-last stack, as the dense block passes it.
    stack = torch.randn(3, channels + 4, height, width, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    inputs = stack[:, 2:2 + channels]
    grad_out = torch.randn(3, out_channels, height, width, dtype=torch.float64)
    weight = torch.randn(out_channels, channels, 3, 3, dtype=torch.float64)
    expected = torch.ops.aten.convolution_backward(grad_out, inputs.contiguous(), weight, None, [1, 1], [1, 1],
                                                   [1, 1], False, [0, 0], 1, [False, True, False])[1]
    torch.testing.assert_close(conv3x3_weight_grad(grad_out, inputs), expected, rtol=1e-12, atol=1e-12)


def test_one_buffer_path_only_where_it_was_measured() -> None:
    x = torch.randn(1, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    assert fused_path_applies(x, True)
    assert not fused_path_applies(x, False)  # eval: running statistics, the layer loop
    assert not fused_path_applies(x.contiguous(), True)  # NCHW: dropout masks come in another memory order
    assert not fused_path_applies(x.bfloat16(), True)
    with torch.no_grad():
        assert not fused_path_applies(x, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_path_applies(x, True)
    # bf16 autocast trains through the layer loop
    model = FCDenseNet(num_classes=2, in_chans=2, stem_filters=4, growth_rate=2, block_layers=(1, 1, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert model.bottleneck.layers[0].conv.weight.grad is not None


# -- DeepLabv3+: dilated depthwise convolutions without oneDNN's dilated kernels --------------------------------


@pytest.mark.parametrize(("rate", "height", "width"), [(2, 14, 14), (2, 13, 10), (3, 9, 11), (6, 14, 14),
                                                       (12, 14, 14), (18, 14, 14), (4, 5, 20)])
def test_dilated_depthwise_training_path_equals_torchs_convolution(rate: int, height: int, width: int) -> None:
    torch.manual_seed(rate)
    conv = DepthwiseConv2d(6, 6, 3, padding=rate, dilation=rate, groups=6, bias=False).double()
    x = torch.randn(2, 6, height, width, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    outputs = []
    for forward in (conv, lambda t: torch.nn.Conv2d.forward(conv, t)):
        inputs = x.clone().requires_grad_()
        out = forward(inputs)
        grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
        outputs.append((out.detach(), *torch.autograd.grad(out, (inputs, conv.weight), grad)))
    (out, gx, gw), (ref, ref_gx, ref_gw) = outputs
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rate", [2, 18])
def test_space_to_batch_and_tap_sum_are_the_paths_taken(rate: int, monkeypatch) -> None:
    conv = DepthwiseConv2d(4, 4, 3, padding=rate, dilation=rate, groups=4, bias=False)
    x = torch.randn(1, 4, 14, 14).contiguous(memory_format=torch.channels_last)
    calls: list[str] = []
    monkeypatch.setattr(deeplab, "_tap_sum", lambda *a: calls.append("taps") or torch.zeros(1, 4, 14, 14))
    monkeypatch.setattr(deeplab, "_space_to_batch", lambda *a: calls.append("grids") or torch.zeros(4, 4, 7, 7))
    conv(x)
    assert calls == (["grids"] if rate == 2 else ["taps"])
    with torch.no_grad():  # inference keeps torch's dilated kernel
        conv(x)
    assert len(calls) == 1


def test_deeplab_state_dict_unchanged_by_the_depthwise_class() -> None:
    separable = deeplab.SeparableConv(4, 6, rate=2)
    assert isinstance(separable.depthwise, DepthwiseConv2d)
    plain = torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False)
    plain.load_state_dict(separable.depthwise.state_dict())  # strict: the same keys and shapes


@pytest.mark.parametrize("rate", [2, 18])
def test_dilated_depthwise_training_path_under_bf16_autocast(rate: int) -> None:
    torch.manual_seed(0)
    conv = DepthwiseConv2d(8, 8, 3, padding=rate, dilation=rate, groups=8, bias=False)
    x = torch.randn(2, 8, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        ref = torch.nn.Conv2d.forward(conv, x)
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)
    out.float().square().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


# -- 1×1 convolutions as matrix products -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("height", "width"), [(5, 7), (1, 1)])
def test_pointwise_training_path_equals_torchs_convolution(bias: bool, height: int, width: int) -> None:
    torch.manual_seed(1)
    conv = PointwiseConv2d(6, 4, bias=bias).double()
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, 6, height, width, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert channels_last_cpu_training(x)
    params = list(conv.parameters())
    outputs = []
    for forward in (conv, lambda t: torch.nn.Conv2d.forward(conv, t)):
        inputs = x.clone().requires_grad_()
        out = forward(inputs)
        grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
        outputs.append((out.detach(), *torch.autograd.grad(out, (inputs, *params), grad)))
    for mine, reference in zip(*outputs):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)
    assert outputs[0][0].is_contiguous(memory_format=torch.channels_last)


def test_pointwise_matrix_product_only_where_it_was_measured(monkeypatch) -> None:
    conv = PointwiseConv2d(4, 3)
    cl = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    calls: list[int] = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr("cytolens.segment.pointwise.F.linear", lambda *a: calls.append(1) or linear(*a))
    conv(cl)
    assert calls == [1]
    with torch.no_grad():  # inference: torch's convolution
        conv(cl)
    conv(cl.contiguous())  # NCHW
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast: not timed on a bf16 machine
        conv(cl)
    conv.double()(cl.double())  # fp64: the matrix product again
    assert calls == [1, 1]
    with torch.no_grad():
        torch.testing.assert_close(conv(cl.double()), torch.nn.Conv2d.forward(conv, cl.double()))


def test_networks_use_the_pointwise_class_and_keep_their_state_dict_keys() -> None:
    separable = deeplab.SeparableConv(4, 6)
    assert isinstance(separable.pointwise, PointwiseConv2d)
    plain = torch.nn.Conv2d(4, 6, 1, bias=False)
    plain.load_state_dict(separable.pointwise.state_dict())  # strict: the same keys and shapes
    model = deeplab.DeepLabV3Plus(num_classes=3, in_chans=1, middle_blocks=1)
    pointwise = [m for m in model.modules() if isinstance(m, PointwiseConv2d)]
    # One per separable conv (3 in each of the 3 + 1 + 2 Xception blocks, 3 ASPP branches, 2 in the decoder) and
    # the 1×1 convolutions of ASPP (image pooling, branch, projection) and of the low-level path.
    assert len(pointwise) == 3 * 6 + 3 + 2 + 4
    # Strided shortcuts and the 3-class head stay torch's convolutions.
    assert all(m.stride == (1, 1) for m in pointwise) and not isinstance(model.head, PointwiseConv2d)
    tiramisu = FCDenseNet(num_classes=3, in_chans=1, stem_filters=8, growth_rate=4, block_layers=(2, 2, 2, 2, 2))
    assert sum(isinstance(m, PointwiseConv2d) for m in tiramisu.modules()) == 2  # one per transition down
