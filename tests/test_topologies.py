"""One tiny net per topology (NetSpec), each cut verified exact with non-trivial BatchNorm
statistics, Scale parameters and biases: the removed channels are silenced where they enter
their consumers, which holds whatever lies between (BatchNorm, Scale, Sigmoid, biases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FILL, assert_one_line_error, net_text, pytrim, toy_db, write_net

from pytrim.caffeio.proto import read_net
from pytrim.core.errors import BadInput, UnsupportedTopology
from pytrim.graph.build import net_graph
from pytrim.graph.queries import coverage, group_of
from pytrim.stats.collect import collect
from pytrim.surgery.choose import Selection
from pytrim.surgery.cut import cut
from pytrim.surgery.verify import verify


def L():
    from caffe import layers

    return layers


def P():
    from caffe import params

    return params


def conv(bottom, n: int, k: int = 3, **kw):
    return L().Convolution(bottom, num_output=n, kernel_size=k, pad=k // 2, **FILL, **kw)


def bn_scale_relu(n, name: str, bottom, relu: bool = True):
    """BatchNorm + Scale (+ ReLU), in place, as ResNet and MobileNet write them."""
    setattr(n, f"{name}_bn", L().BatchNorm(bottom, in_place=True))
    setattr(n, f"{name}_scale", L().Scale(getattr(n, f"{name}_bn"), bias_term=True, in_place=True))
    top = getattr(n, f"{name}_scale")
    if relu:
        setattr(n, f"{name}_relu", L().ReLU(top, in_place=True))
        top = getattr(n, f"{name}_relu")
    return top


def head(n, bottom, classes: int = 5):
    n.pool = L().Pooling(bottom, pool=P().Pooling.AVE, global_pooling=True)
    n.fc = L().InnerProduct(n.pool, num_output=classes, **FILL)
    return n.fc


def bn_body(n, data):
    n.conv1 = conv(data, 8)
    top = bn_scale_relu(n, "conv1", n.conv1)
    n.conv2 = conv(top, 6)
    n.relu2 = L().ReLU(n.conv2, in_place=True)
    return head(n, n.relu2)


def identity_residual(n, data):
    n.conv0 = conv(data, 8)
    top = bn_scale_relu(n, "conv0", n.conv0)
    n.a = conv(top, 4)
    a = bn_scale_relu(n, "a", n.a)
    n.b = conv(a, 8)
    b = bn_scale_relu(n, "b", n.b, relu=False)
    n.sum = L().Eltwise(top, b)
    n.sum_relu = L().ReLU(n.sum, in_place=True)
    n.next = conv(n.sum_relu, 6)
    return head(n, n.next)


def projection_residual(n, data):
    n.conv0 = conv(data, 6)
    top = bn_scale_relu(n, "conv0", n.conv0)
    n.proj = conv(top, 8, k=1)
    proj = bn_scale_relu(n, "proj", n.proj, relu=False)
    n.a = conv(top, 4)
    a = bn_scale_relu(n, "a", n.a)
    n.b = conv(a, 8)
    b = bn_scale_relu(n, "b", n.b, relu=False)
    n.sum = L().Eltwise(proj, b, eltwise_param={"operation": P().Eltwise.SUM, "coeff": [1.0, 0.5]})
    n.sum_relu = L().ReLU(n.sum, in_place=True)
    n.c = conv(n.sum_relu, 4)
    n.d = conv(n.sum_relu, 8)  # a second consumer of the residual group
    n.prod = L().Eltwise(n.d, n.sum_relu, eltwise_param={"operation": P().Eltwise.PROD})
    return head(n, n.prod)


def inception(n, data):
    n.stem = conv(data, 6)
    n.stem_relu = L().ReLU(n.stem, in_place=True)
    n.b1 = conv(n.stem_relu, 4, k=1)
    n.b1_relu = L().ReLU(n.b1, in_place=True)
    n.b2 = conv(n.stem_relu, 5)
    n.b2_relu = L().ReLU(n.b2, in_place=True)
    n.pool = L().Pooling(n.stem_relu, pool=P().Pooling.MAX, kernel_size=3, stride=1, pad=1)
    n.b3 = conv(n.pool, 3, k=1)
    n.b3_relu = L().ReLU(n.b3, in_place=True)
    n.cat = L().Concat(n.b1_relu, n.b2_relu, n.b3_relu)
    n.next = conv(n.cat, 6)
    n.gpool = L().Pooling(n.next, pool=P().Pooling.AVE, global_pooling=True)
    n.fc = L().InnerProduct(n.gpool, num_output=5, **FILL)
    return n.fc


def sliced(n, data):
    n.conv1 = conv(data, 8)
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.part1, n.part2 = L().Slice(n.relu1, ntop=2, slice_param={"axis": 1, "slice_point": [3]})
    n.a = conv(n.part1, 4)
    n.b = conv(n.part2, 4)
    n.cat = L().Concat(n.a, n.b)
    return head(n, n.cat)


def depthwise_separable(n, data):
    n.conv0 = conv(data, 8)
    top = bn_scale_relu(n, "conv0", n.conv0)
    n.dw = conv(top, 8, group=8, bias_term=False)
    dw = bn_scale_relu(n, "dw", n.dw)
    n.pw = conv(dw, 12, k=1, bias_term=False)
    pw = bn_scale_relu(n, "pw", n.pw)
    return head(n, pw)


def grouped(n, data):
    n.conv1 = conv(data, 8)
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.conv2 = conv(n.relu1, 6, group=2)
    n.relu2 = L().ReLU(n.conv2, in_place=True)
    n.conv3 = conv(n.relu2, 4)
    return head(n, n.conv3)


def prelu(n, data):
    n.conv1 = conv(data, 8)
    n.prelu = L().PReLU(n.conv1, prelu_param={"filler": {"type": "uniform", "min": -0.5, "max": 0.5}})
    n.conv2 = conv(n.prelu, 6)
    return head(n, n.conv2)


def sigmoid(n, data):
    n.conv1 = conv(data, 8)
    n.sig = L().Sigmoid(n.conv1)
    n.conv2 = conv(n.sig, 6)
    n.tanh = L().TanH(n.conv2)
    n.flat = L().Flatten(n.tanh)
    n.fc = L().InnerProduct(n.flat, num_output=5, **FILL)
    return n.fc


def lrn(region: str):
    def body(n, data):
        n.conv1 = conv(data, 8)
        n.relu1 = L().ReLU(n.conv1, in_place=True)
        n.norm = L().LRN(n.relu1, local_size=3, alpha=1.0, beta=0.75, norm_region=getattr(P().LRN, region))
        n.conv2 = conv(n.norm, 6)
        return head(n, n.conv2)

    return body


def deconv_transpose(n, data):
    n.conv1 = conv(data, 6)
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.up = L().Deconvolution(n.relu1, convolution_param={"num_output": 5, "kernel_size": 2, "stride": 2, **FILL})
    n.relu2 = L().ReLU(n.up, in_place=True)
    n.reshape = L().Reshape(n.relu2, reshape_param={"shape": {"dim": [0, -1]}})
    n.ip1 = L().InnerProduct(n.reshape, num_output=7, transpose=True, **FILL)
    n.relu3 = L().ReLU(n.ip1, in_place=True)
    n.ip2 = L().InnerProduct(n.relu3, num_output=5, **FILL)
    return n.ip2


def siamese(n, data):
    """Two inputs through shared weights (param names), joined at the end."""
    shared_w, shared_b = {"name": "conv1_w"}, {"name": "conv1_b"}
    n.data_p = L().Input(shape={"dim": [2, 2, 8, 8]})
    n.conv1 = conv(data, 6, param=[shared_w, shared_b])
    n.conv1_p = conv(n.data_p, 6, param=[shared_w, shared_b])
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.relu1_p = L().ReLU(n.conv1_p, in_place=True)
    fc = {"num_output": 5, **FILL}
    n.ip = L().InnerProduct(n.relu1, param=[{"name": "ip_w"}, {"name": "ip_b"}], **fc)
    n.ip_p = L().InnerProduct(n.relu1_p, param=[{"name": "ip_w"}, {"name": "ip_b"}], **fc)
    n.join = L().Eltwise(n.ip, n.ip_p)
    return n.join


def excitation(n, name: str, bottom, width: int, kind: str):
    """Squeeze-and-excitation of `bottom` (width channels): global pooling, a 1x1 reduce and
    expand (or two InnerProducts: `kind` "ip"), a Sigmoid, shaped to (N, C) by Reshape or
    Flatten ("4d": kept (N, C, 1, 1)); the Scale with two bottoms multiplies channel by channel."""
    setattr(n, f"{name}_pool", L().Pooling(bottom, pool=P().Pooling.AVE, global_pooling=True))
    pool = getattr(n, f"{name}_pool")
    lively = {"weight_filler": FILL["weight_filler"], "bias_filler": {"type": "constant", "value": 1.0}}
    if kind == "ip":  # a bias of 1: the reduction is not all zeros after its ReLU on random BatchNorm statistics
        setattr(n, f"{name}_reduce", L().InnerProduct(pool, num_output=3, **lively))
    else:
        setattr(n, f"{name}_reduce", L().Convolution(pool, num_output=3, kernel_size=1, **lively))
    setattr(n, f"{name}_reduce_relu", L().ReLU(getattr(n, f"{name}_reduce"), in_place=True))
    make = L().InnerProduct if kind == "ip" else lambda b, **kw: conv(b, kw.pop("num_output"), k=1, **kw)
    setattr(n, f"{name}_expand", make(getattr(n, f"{name}_reduce_relu"), num_output=width))
    setattr(n, f"{name}_gate", L().Sigmoid(getattr(n, f"{name}_expand")))
    gate = getattr(n, f"{name}_gate")
    if kind == "reshape":
        setattr(n, f"{name}_shape", L().Reshape(gate, reshape_param={"shape": {"dim": [0, -1]}}))
        gate = getattr(n, f"{name}_shape")
    elif kind == "flatten":
        setattr(n, f"{name}_shape", L().Flatten(gate))
        gate = getattr(n, f"{name}_shape")
    setattr(n, f"{name}_scale", L().Scale(bottom, gate, scale_param={"axis": 0}))
    return getattr(n, f"{name}_scale")


def squeeze_excite(kind: str):
    """A residual block whose branch is scaled by its excitation (SE-ResNet)."""

    def body(n, data):
        n.conv0 = conv(data, 8)
        top = bn_scale_relu(n, "conv0", n.conv0)
        n.a = conv(top, 4)
        a = bn_scale_relu(n, "a", n.a)
        n.b = conv(a, 8)
        b = bn_scale_relu(n, "b", n.b, relu=False)
        n.sum = L().Eltwise(top, excitation(n, "se", b, 8, kind))
        n.sum_relu = L().ReLU(n.sum, in_place=True)
        n.next = conv(n.sum_relu, 6)
        return head(n, n.next)

    return body


def squeeze_excite_4d(n, data):
    """An excitation kept (N, C, 1, 1) scaling a (N, C, 1, 1) blob with axis 0 (after global
    pooling, as a classifier's SE does): every axis of the blob is covered."""
    n.conv0 = conv(data, 8)
    n.relu0 = L().ReLU(n.conv0, in_place=True)
    n.gp = L().Pooling(n.relu0, pool=P().Pooling.AVE, global_pooling=True)
    n.conv1 = conv(n.gp, 8, k=1)
    n.relu1 = L().ReLU(n.conv1, in_place=True)
    n.fc = L().InnerProduct(excitation(n, "se", n.relu1, 8, "4d"), num_output=5, **FILL)
    return n.fc


def concat_projection(n, data):
    """A Concat of two convolutions added to a 1x1 projection (Inception-ResNet): channel i of
    `a` is channel i of `p`, channel j of `b` channel 4 + j of `p`."""
    n.a = conv(data, 4)
    n.a_relu = L().ReLU(n.a, in_place=True)
    n.b = conv(data, 4, k=1)
    n.b_relu = L().ReLU(n.b, in_place=True)
    n.cat = L().Concat(n.a_relu, n.b_relu)
    n.c = conv(n.cat, 5)
    n.c_relu = L().ReLU(n.c, in_place=True)
    n.p = conv(n.c_relu, 8, k=1)
    p = bn_scale_relu(n, "p", n.p, relu=False)
    n.sum = L().Eltwise(n.cat, p)
    n.sum_relu = L().ReLU(n.sum, in_place=True)
    n.next = conv(n.sum_relu, 6)
    return head(n, n.next)


def dual_path(n, data):
    """DPN: each block's convolution is sliced, its first part added to the residual path,
    the rest concatenated to the dense path."""
    n.stem = conv(data, 6)
    n.stem_relu = L().ReLU(n.stem, in_place=True)
    residual, dense, top = n.stem_relu, None, n.stem_relu
    for i in (1, 2):
        setattr(n, f"c{i}", conv(top, 10))
        res, new = L().Slice(getattr(n, f"c{i}"), ntop=2, slice_param={"axis": 1, "slice_point": [6]})
        setattr(n, f"c{i}_res", res)
        setattr(n, f"c{i}_dense", new)
        setattr(n, f"sum{i}", L().Eltwise(residual, res))
        residual = getattr(n, f"sum{i}")
        if dense is not None:
            setattr(n, f"dense{i}", L().Concat(dense, new))
            new = getattr(n, f"dense{i}")
        dense = new
        setattr(n, f"cat{i}", L().Concat(residual, dense))
        setattr(n, f"cat{i}_relu", L().ReLU(getattr(n, f"cat{i}"), in_place=True))
        top = getattr(n, f"cat{i}_relu")
    n.next = conv(top, 6)
    return head(n, n.next)


def filler_with_statistics(caffe, net_path: Path, out: Path, seed: int = 7) -> Path:
    """Filler weights, then BatchNorm statistics (mean, variance, a scale factor of 2), Scale
    gamma/beta and PReLU slopes set to random non-trivial values: a silenced channel then
    leaves BatchNorm/Scale as a non-zero constant."""
    caffe.set_random_seed(seed)
    net = caffe.Net(str(net_path), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            blobs[0].data[...] = 2 * rng.normal(0, 0.5, blobs[0].data.shape)
            blobs[1].data[...] = 2 * rng.uniform(0.5, 2.0, blobs[1].data.shape)
            blobs[2].data[...] = 2.0
        elif kind == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            if len(blobs) > 1:  # a Scale without bias_term has gamma only
                blobs[1].data[...] = rng.normal(0, 0.5, blobs[1].data.shape)
    net.save(str(out))
    return out


def removal(width: int, count: int, blocks: int = 1) -> list[int]:
    """`count` channels spread over the group (the same number from each block)."""
    per, each = width // blocks, count // blocks
    return sorted(b * per + i for b in range(blocks) for i in np.linspace(0, per - 1, each).astype(int))


def cut_and_verify(caffe, tmp_path: Path, body, layers: dict[str, int], shape=(2, 2, 8, 8), inexact: bool = False,
                   inexact_tol: float = 1e-2):  # fmt: skip
    deploy = write_net(tmp_path / "deploy.prototxt", net_text(body, list(shape)))
    weights = filler_with_statistics(caffe, deploy, tmp_path / "w.caffemodel")
    _, graph = net_graph(deploy, allow_inexact=inexact)
    selections = {}
    for name, count in layers.items():
        group = group_of(graph, name)
        remove = removal(group.width, count, group.blocks)
        selections[name] = Selection(name, group.width, np.setdiff1d(np.arange(group.width), remove), np.array(remove))
    out = tmp_path / "cut"
    result = cut([deploy], weights, selections, [out / "deploy.prototxt"], out / "trimmed.caffemodel", inexact)
    check = verify(deploy, weights, out / "deploy.prototxt", out / "trimmed.caffemodel", selections, batches=2,
                   allow_inexact=inexact, inexact_tol=inexact_tol)  # fmt: skip
    return result, check, graph


CASES = {
    "BatchNorm+Scale after conv": (bn_body, {"conv1": 3, "conv2": 2}),
    "identity residual": (identity_residual, {"conv0": 3, "a": 1}),
    "projection residual (SUM with coefficients, PROD)": (projection_residual, {"proj": 3, "a": 2, "conv0": 1}),
    "inception-like Concat": (inception, {"b1": 1, "b2": 2, "b3": 1, "stem": 2}),
    "Slice": (sliced, {"conv1": 3, "a": 1}),
    "depthwise-separable": (depthwise_separable, {"conv0": 3, "pw": 4}),
    "grouped convolution g=2": (grouped, {"conv1": 4, "conv2": 2}),
    "PReLU": (prelu, {"conv1": 3}),
    "Sigmoid, TanH, Flatten": (sigmoid, {"conv1": 3, "conv2": 2}),
    "LRN within channel": (lrn("WITHIN_CHANNEL"), {"conv1": 3}),
    "Deconvolution, Reshape, transposed InnerProduct": (deconv_transpose, {"conv1": 2, "up": 2, "ip1": 3}),
    "shared weights (Siamese)": (siamese, {"conv1": 2}),
    "squeeze-and-excitation, Reshape to (N, C)": (squeeze_excite("reshape"), {"conv0": 3, "a": 1, "se_reduce": 1}),
    "squeeze-and-excitation, Flatten": (squeeze_excite("flatten"), {"conv0": 3, "se_reduce": 1}),
    "squeeze-and-excitation, InnerProducts, axis 0 on (N, C)": (squeeze_excite("ip"), {"b": 3, "se_reduce": 1}),
    "squeeze-and-excitation, axis 0 on a 4-D excitation": (squeeze_excite_4d, {"conv0": 2, "conv1": 3}),
    "Concat of two convolutions added to a 1x1 projection": (concat_projection, {"a": 3, "c": 2}),
    "Slice added to a residual and concatenated (dual path)": (dual_path, {"stem": 5}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cut_is_exact(caffe, tmp_path: Path, case: str) -> None:
    body, layers = CASES[case]
    result, check, _ = cut_and_verify(caffe, tmp_path, body, layers)
    assert check.ok and not check.problems, check.problems
    assert check.max_relative <= 1e-5, check.max_relative
    assert not check.inexact
    assert result.params_after < result.params_before
    for name, count in layers.items():
        assert result.widths_after[name] == result.widths_before[name] - count


def test_a_concat_joined_to_a_projection_maps_each_part(caffe, tmp_path: Path) -> None:
    """Removing channel i of `a` removes channel i of `p`; channel j of `b`, channel 4 + j."""
    result, check, graph = cut_and_verify(caffe, tmp_path, concat_projection, {"a": 3})
    assert check.ok
    group = group_of(graph, "p")
    assert group is group_of(graph, "a") is group_of(graph, "b") and group.width == 8
    assert [name for name, _ in group.parts] == ["a", "b"]
    removed = removal(8, 3)  # [0, 3, 7]: a's 0 and 3, b's 3
    keep = [int(c) for c in np.setdiff1d(np.arange(8), removed)]
    assert result.recipe["a"].num_output == 2 and result.recipe["b"].num_output == 3
    assert result.recipe["p"].num_output == 5 and result.recipe["p"].blobs[0][0].keep == keep
    assert result.recipe["b"].blobs[0][0].keep == [c - 4 for c in keep if c >= 4]
    empty = Selection("a", 8, np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]))
    with pytest.raises(BadInput, match="would empty layer 'b'"):
        cut([tmp_path / "deploy.prototxt"], tmp_path / "w.caffemodel", {"a": empty},
            [tmp_path / "x/deploy.prototxt"], tmp_path / "x/t.caffemodel")  # fmt: skip


def test_choose_never_empties_a_layer_of_a_joined_group(caffe, tmp_path: Path) -> None:
    from pytrim.surgery.choose import Rule, choose

    deploy = write_net(tmp_path / "deploy.prototxt", net_text(concat_projection, [2, 2, 8, 8]))
    group = group_of(net_graph(deploy)[1], "a")
    scores = np.array([0.1, 0.2, 0.1, 0.2, 0.9, 0.8, 0.95, 0.7])  # b's channels (4..7) score highest
    found = choose("a", scores, Rule("count", count=4), group.blocks, group.parts)
    assert found.remove.tolist() == [4, 5, 6] and found.keep.tolist() == [0, 1, 2, 3, 7]


def test_statistics_of_a_joined_group_keep_its_parts(caffe, tmp_path: Path) -> None:
    """The layers owning part of a joined group travel with its statistics (collect, the
    statistics file) so that choosing from a file never empties one of them."""
    from pytrim.stats.statsfile import load_stats, save_stats

    db = toy_db(tmp_path / "db", 8, side=8)
    net = write_net(tmp_path / "tv.prototxt", net_text(concat_projection, [4, 1, 8, 8], (db, db, 4)))
    weights = filler_with_statistics(caffe, net, tmp_path / "w.caffemodel")
    group = collect(net, weights, progress=False).find("b")
    assert group.width == 8 and {"a", "b", "p"} <= set(group.members)
    assert {p.blob for p in group.points} == {"a", "b", "sum"}  # a's and b's ReLUs, the sum's
    loaded = load_stats(save_stats(collect(net, weights, progress=False), tmp_path / "s.h5")).find("b")
    assert [(name, part.tolist()) for name, part in loaded.parts] == [("a", [0, 1, 2, 3]), ("b", [4, 5, 6, 7])]


def test_dual_path_slices_map_into_the_residual_group(caffe, tmp_path: Path) -> None:
    result, check, graph = cut_and_verify(caffe, tmp_path, dual_path, {"stem": 5})
    assert check.ok
    group = group_of(graph, "stem")
    # stem (6) + c1's dense part (4) + c2's dense part (4): one index space of 14 channels.
    assert group is group_of(graph, "c1") is group_of(graph, "c2") and group.width == 14
    removed = removal(14, 5)  # [0, 3, 6, 9, 13]
    assert removed == [0, 3, 6, 9, 13]
    assert result.recipe["stem"].num_output == 4  # 0 and 3 go
    assert result.recipe["c1"].num_output == 6 and result.recipe["c1_res"].slice_point == [4]  # and its 6, 9
    assert result.recipe["c2"].num_output == 7 and result.recipe["c2_res"].slice_point == [4]  # and its 13 - 4
    assert result.recipe["c2"].blobs[0][0].keep == [1, 2, 4, 5, 6, 7, 8]


def test_each_member_of_a_coupled_group_is_cut(caffe, tmp_path: Path) -> None:
    result, check, graph = cut_and_verify(caffe, tmp_path, identity_residual, {"conv0": 2})
    assert check.ok
    group = group_of(graph, "b")  # the residual group: conv0, b, their BatchNorm/Scale, the sum
    assert group_of(graph, "conv0") is group and {"conv0", "b"} <= set(group.producers)
    assert {"conv0_bn", "conv0_scale", "b_bn", "b_scale"} <= set(group.members)
    cut_layers = result.recipe
    assert cut_layers["conv0"].num_output == cut_layers["b"].num_output == 6
    assert {"a", "next"} <= set(cut_layers)  # both consumers lose the two input channels
    assert [op.keep for op in cut_layers["b_bn"].blobs[0]] == [[1, 2, 3, 4, 5, 6]]  # mean, not the factor
    assert 2 not in cut_layers["b_bn"].blobs


def test_the_depthwise_convolution_follows_its_producer(caffe, tmp_path: Path) -> None:
    result, _, graph = cut_and_verify(caffe, tmp_path, depthwise_separable, {"conv0": 3})
    assert group_of(graph, "dw") is group_of(graph, "conv0")
    assert result.recipe["dw"].num_output == result.recipe["dw"].group == 5


def test_consumer_side_silencing_is_needed_after_sigmoid(caffe, tmp_path: Path) -> None:
    """Zeroing conv1's rows leaves Sigmoid(0) = 0.5 flowing into conv2: not the trimmed net."""
    _, check, _ = cut_and_verify(caffe, tmp_path, sigmoid, {"conv1": 3})
    assert check.ok
    original = caffe.Net(str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel"), caffe.TEST)
    trimmed = caffe.Net(str(tmp_path / "cut/deploy.prototxt"), str(tmp_path / "cut/trimmed.caffemodel"), caffe.TEST)
    removed = removal(8, 3)
    original.params["conv1"][0].data[removed] = 0
    original.params["conv1"][1].data[removed] = 0
    x = np.random.default_rng(0).random(original.blobs["data"].data.shape, dtype=np.float32)
    original.blobs["data"].data[...] = trimmed.blobs["data"].data[...] = x
    assert not np.allclose(original.forward()["fc"], trimmed.forward()["fc"], atol=1e-4)


def test_lrn_across_channels_is_refused_then_allowed_with_its_deviation(caffe, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTopology, match="LRN 'norm' normalises across channels"):
        cut_and_verify(caffe, tmp_path, lrn("ACROSS_CHANNELS"), {"conv1": 3})
    assert not (tmp_path / "cut").exists()
    # This LRN normalises hard (alpha 1): removing 3 of 8 channels moves its output by about 0.19.
    result, check, _ = cut_and_verify(caffe, tmp_path, lrn("ACROSS_CHANNELS"), {"conv1": 3}, inexact=True,
                                      inexact_tol=0.5)  # fmt: skip
    assert check.ok and check.inexact and "across channels" in check.inexact[0]
    assert 1e-5 < check.worst(inexact=True) < 0.5  # measured and reported, not hidden
    assert check.max_relative <= 1e-5  # conv1's output, upstream of the LRN, is held to the exact tolerance
    assert check.to_json()["exact"] is False
    assert result.inexact == {"conv1": check.inexact}
    (tmp_path / "bound").mkdir()
    _, strict, _ = cut_and_verify(caffe, tmp_path / "bound", lrn("ACROSS_CHANNELS"), {"conv1": 3}, inexact=True)
    assert not strict.ok and "tolerance 0.01" in strict.failure()  # the stated bound (1e-2) holds it


def test_grouped_convolution_is_cut_evenly(caffe, tmp_path: Path) -> None:
    _, _, graph = cut_and_verify(caffe, tmp_path, grouped, {"conv1": 2})
    assert group_of(graph, "conv1").blocks == 2 and group_of(graph, "conv2").blocks == 2
    uneven = Selection("conv1", 8, np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7]))
    with pytest.raises(BadInput, match="same number from every block"):
        cut([tmp_path / "deploy.prototxt"], tmp_path / "w.caffemodel", {"conv1": uneven},
            [tmp_path / "x/deploy.prototxt"], tmp_path / "x/t.caffemodel")  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_residual_statistics_average_the_relu_outputs_of_the_group(caffe, tmp_path: Path) -> None:
    db = toy_db(tmp_path / "db", 12, side=8)
    net = write_net(tmp_path / "tv.prototxt", net_text(identity_residual, [4, 1, 8, 8], (db, db, 4)))
    weights = filler_with_statistics(caffe, net, tmp_path / "w.caffemodel")
    stats = collect(net, weights, progress=False)
    group = stats.find("b")
    assert group is stats.find("conv0") and [p.blob for p in group.points] == ["conv0", "sum"]
    assert all(p.relu for p in group.points) and stats.find("a").points[0].blob == "a"
    trained = caffe.Net(str(net), str(weights), caffe.TEST)
    outs = {"conv0": [], "sum": []}
    for _ in range(3):
        trained.forward()
        for blob, kept in outs.items():
            kept.append(trained.blobs[blob].data.copy())
    apoz = [(np.concatenate(outs[b]) == 0).mean(axis=(0, 2, 3)) for b in outs]
    np.testing.assert_allclose(group.apoz, (apoz[0] + apoz[1]) / 2)


def test_coverage_names_what_cannot_be_cut_and_why(caffe, tmp_path: Path) -> None:
    deploy = write_net(tmp_path / "d.prototxt", net_text(lrn("ACROSS_CHANNELS"), [2, 2, 8, 8]))

    report = coverage(net_graph(deploy)[1], read_net(deploy))
    assert report["conv_ip_layers"] == 3 and report["trimmable"] == 1
    assert "across channels" in report["refused"]["conv1"] and "an output of the net" in report["refused"]["fc"]
    assert coverage(net_graph(deploy, allow_inexact=True)[1], read_net(deploy))["trimmable"] == 2


def unknown_layer(n, data):
    n.conv1 = conv(data, 8)
    n.tile = L().Tile(n.conv1, axis=1, tiles=2)
    n.conv2 = conv(n.tile, 6)
    return head(n, n.conv2)


def halves_summed(n, data):
    """The two halves of one convolution's output added: channel i would have to go with
    channel 4 + i of the same group, which no cut of one index space can say."""
    n.c = conv(data, 8)
    n.h1, n.h2 = L().Slice(n.c, ntop=2, slice_param={"axis": 1})
    n.sum = L().Eltwise(n.h1, n.h2)
    return head(n, n.sum)


def batch_concat(n, data):
    n.a = conv(data, 4)
    n.b = conv(data, 4)
    n.cat = L().Concat(n.a, n.b, axis=0)
    return head(n, n.cat)


def scale_by_axis_1(n, data):
    """Scale with a second bottom and axis 1: the second bottom (C,) holds the channels on its
    axis 0 (Caffe accepts no 4-D (N, C, 1, 1) excitation with axis 1, nor with axis 0 on an
    (N, C, H, W) blob with H, W > 1)."""
    n.c = conv(data, 8)
    n.gamma = L().Parameter(parameter_param={"shape": {"dim": [8]}})
    n.scaled = L().Scale(n.c, n.gamma, scale_param={"axis": 1})
    return head(n, n.scaled)


def test_a_second_bottom_on_axis_1_is_refused_with_its_reason(caffe, tmp_path: Path) -> None:
    deploy = write_net(tmp_path / "deploy.prototxt", net_text(scale_by_axis_1, [2, 2, 8, 8]))
    with pytest.raises(UnsupportedTopology, match="second bottom holds the channels on its axis 0"):
        group_of(net_graph(deploy)[1], "c")


def test_unsupported_topologies_are_one_line_errors_and_write_nothing(caffe, tmp_path: Path) -> None:
    cases = [
        (unknown_layer, "conv1", "passes Tile layer 'tile', whose channel mapping pytrim does not know"),
        (halves_summed, "c", "Eltwise 'sum' joins different channels of one channel group"),
        (batch_concat, "a", "Concat layer 'cat' on an axis other than the channels"),
    ]
    for body, layer, message in cases:
        d = tmp_path / body.__name__
        d.mkdir()
        deploy = write_net(d / "deploy.prototxt", net_text(body, [2, 2, 8, 8]))
        weights = filler_with_statistics(caffe, deploy, d / "w.caffemodel")
        selection = d / "sel.json"
        width = 8 if layer in ("c", "conv1") else 4
        selection.write_text(f'{{"layers": [{{"layer": "{layer}", "width": {width}, "keep": [0, 1], '
                             f'"remove": {list(range(2, width))}}}]}}')  # fmt: skip
        r = pytrim("cut", "--net", deploy, "--weights", weights, "--selection", selection, "--out", d / "cut")
        assert_one_line_error(r, f"layer {layer!r} cannot be trimmed", message)
        assert not (d / "cut").exists()
    # A plan that would empty a group.
    d = tmp_path / "halves_summed"
    (d / "empty.json").write_text('{"layers": [{"layer": "a", "width": 4, "keep": [], "remove": [0, 1, 2, 3]}]}')
    deploy = write_net(d / "ok.prototxt", net_text(bn_body, [2, 2, 8, 8]))
    weights = filler_with_statistics(caffe, deploy, d / "ok.caffemodel")
    (d / "empty.json").write_text(
        '{"layers": [{"layer": "conv1", "width": 8, "keep": [], "remove": [0, 1, 2, 3, 4, 5, 6, 7]}]}'
    )
    r = pytrim("cut", "--net", deploy, "--weights", weights, "--selection", d / "empty.json", "--out", d / "cut2")
    assert_one_line_error(r, "would empty layer 'conv1'")


def fold_body(n, data):
    """conv1 -> BN/Scale/ReLU -> conv2 (unpadded, no bias) -> ReLU -> Flatten -> fc."""
    n.conv1 = conv(data, 8)
    top = bn_scale_relu(n, "conv1", n.conv1)
    n.conv2 = L().Convolution(top, num_output=6, kernel_size=3, bias_term=False, weight_filler=FILL["weight_filler"])
    n.relu2 = L().ReLU(n.conv2, in_place=True)
    n.flat = L().Flatten(n.relu2)
    n.fc = L().InnerProduct(n.flat, num_output=5, **FILL)
    return n.fc


def test_fold_mean_is_exact_for_constant_channels(caffe, tmp_path: Path) -> None:
    """Channels that are constant (zero weights: BatchNorm/Scale/ReLU make a constant of
    them) are replaced exactly by their means in the consumers' biases: the trimmed net then
    equals the original, not just the silenced original (conv2 had no bias: it gets one)."""
    db = toy_db(tmp_path / "db", 8, side=8)
    net = write_net(tmp_path / "tv.prototxt", net_text(fold_body, [4, 1, 8, 8], (db, db, 4)))
    weights = filler_with_statistics(caffe, net, tmp_path / "w.caffemodel")
    original = caffe.Net(str(net), str(weights), caffe.TEST)
    removed = {"conv1": [1, 4, 6], "conv2": [0, 3]}
    for name, channels in removed.items():
        original.params[name][0].data[channels] = 0  # constant outputs: ReLU(Scale(BN(bias)))
    original.save(str(weights))
    stats = collect(net, weights, progress=False, means=True)
    assert set(stats.means) == {"conv1", "flat"}
    selections = {
        name: Selection(name, w, np.setdiff1d(np.arange(w), removed[name]), np.array(removed[name]))
        for name, w in (("conv1", 8), ("conv2", 6))
    }
    out = tmp_path / "cut"
    result = cut([net], weights, selections, [out / "tv.prototxt"], out / "t.caffemodel", fold=stats.means)
    assert result.recipe["conv2"].add_bias
    check = verify(net, weights, out / "tv.prototxt", out / "t.caffemodel", selections, fold=stats.means)
    assert check.ok and check.max_relative <= 1e-5
    plain = tmp_path / "plain"
    cut([net], weights, selections, [plain / "tv.prototxt"], plain / "t.caffemodel")

    def first_batch(prototxt: Path, caffemodel: Path) -> np.ndarray:
        model = caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)
        model.forward()
        return model.blobs["fc"].data.copy()

    want = first_batch(net, weights)
    np.testing.assert_allclose(first_batch(out / "tv.prototxt", out / "t.caffemodel"), want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(first_batch(plain / "tv.prototxt", plain / "t.caffemodel"), want, atol=1e-3)
