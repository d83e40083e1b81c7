"""gpunn.functional's losses and functions. PyTorch's loss options: (N, C, d1, ...) and (C,)
logits, class-probability targets, class weights with label smoothing and ignore_index, BCE's
weight and pos_weight, mse_loss broadcasting; binary_cross_entropy, l1, smooth_l1 and huber
losses, one_hot, normalize and cosine_similarity, and their nn modules.

Values and gradients are checked against PyTorch (float64, where installed) on every device;
weight and pos_weight gradients, which PyTorch's BCE does not give, against finite differences.
"""

import math
import warnings

import numpy as np
import pytest

import gpunn
import gpunn.functional as F
import gpunn.nn as nn
from gpunn.errors import DTypeError, ShapeError
from gpunn.testing import gradcheck
from helpers import assert_close, away_from_zero, rng, to_device

REDUCTIONS = ["mean", "sum", "none"]


def _torch():
    return pytest.importorskip("torch")


def _class_targets(shape, classes, seed=1, ignored=0, ignore_index=-100):
    """Integer classes of `shape`, with the first `ignored` positions set to ignore_index."""
    target = rng(seed).integers(0, classes, size=shape)
    target.reshape(-1)[:ignored] = ignore_index
    return target


def _probabilities(shape, seed=2, class_axis=1):
    p = rng(seed).uniform(0.1, 1.0, size=shape)
    return p / p.sum(axis=class_axis, keepdims=True)


def _compare(device, gpunn_loss, torch_loss, arrays, grads=None, rtol=1e-9):
    """gpunn_loss(*tensors on device) against torch_loss(*torch tensors), both float64 leaves where
    the array is floating; the loss and the gradients of the leaves named by `grads` (indices)."""
    torch = _torch()
    grads = range(len(arrays)) if grads is None else grads
    ours = [to_device(a, device, requires_grad=i in grads and a.dtype.kind == "f") for i, a in enumerate(arrays)]
    theirs = [torch.tensor(a, requires_grad=i in grads and a.dtype.kind == "f") for i, a in enumerate(arrays)]
    loss, expected = gpunn_loss(*ours), torch_loss(*theirs)
    assert loss.device == device and loss.shape == tuple(expected.shape)
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=rtol, atol=1e-12)
    seed = rng(9).uniform(0.5, 1.5, size=loss.shape)  # every output entry weighs in the gradient
    (loss * to_device(seed, device)).sum().backward()
    (expected * torch.tensor(seed)).sum().backward()
    for mine, theirs_ in zip(ours, theirs):
        if theirs_.requires_grad:
            assert mine.grad is not None and mine.grad.device == device
            np.testing.assert_allclose(mine.grad.numpy(), theirs_.grad.numpy(), rtol=rtol, atol=1e-12)


# --- cross_entropy and nll_loss: layouts, integer classes ----------------------------------------------


OPTIONS = {
    "plain": {},
    "ignored": {"ignored": 3},
    "weight": {"weight": True},
    "smoothing": {"label_smoothing": 0.2},
    "all": {"weight": True, "label_smoothing": 0.1, "ignored": 2, "ignore_index": 1000},
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (2, 3, 2, 3), (3,)], ids=str)
# a single sample whose target is ignored: its mean is 0/0 = nan, as torch's; array-api-strict warns
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_cross_entropy_integer_classes_match_torch(device, shape, option, reduction):
    torch = _torch()
    opts = OPTIONS[option]
    ignore_index = opts.get("ignore_index", -100)
    out_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    logits = rng(0).normal(size=shape) * 2
    target = _class_targets(out_shape, shape[0 if len(shape) == 1 else 1], ignored=opts.get("ignored", 0),
                            ignore_index=ignore_index)
    arrays = [logits, target]
    if opts.get("weight"):
        arrays.append(rng(3).uniform(0.2, 2.0, size=shape[0 if len(shape) == 1 else 1]))
    kw = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": opts.get("label_smoothing", 0.0)}
    _compare(device, lambda x, t, *w: F.cross_entropy(x, t, *w, **kw),
             lambda x, t, *w: torch.nn.functional.cross_entropy(x, t, *w, **kw), arrays, grads=[0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3)], ids=str)
def test_nll_loss_layouts_match_torch(device, shape, weighted, reduction):
    torch = _torch()
    log_probs = np.log(_probabilities(shape))
    arrays = [log_probs, _class_targets(shape[:1] + shape[2:], shape[1], ignored=1)]
    if weighted:
        arrays.append(rng(3).uniform(0.2, 2.0, size=shape[1]))
    _compare(device, lambda x, t, *w: F.nll_loss(x, t, *w, reduction=reduction),
             lambda x, t, *w: torch.nn.functional.nll_loss(x, t, *w, reduction=reduction), arrays, grads=[0])


def test_plain_integer_classes_keep_the_fused_primitive(device):
    """No weight, no smoothing: one fused node (the CUDA kernel's), for (N, C, d) logits too, and
    the (N, C) numbers are the primitive's own."""
    logits = to_device(rng(0).normal(size=(6, 5)), device, requires_grad=True)
    target = to_device(_class_targets((6,), 5), device)
    loss = F.cross_entropy(logits, target)
    assert loss.grad_fn == "cross_entropy"
    direct = gpunn.apply(gpunn.ops.cross_entropy, logits, target, reduction="mean", ignore_index=-100)
    assert loss.numpy() == direct.numpy()
    spatial = to_device(rng(0).normal(size=(2, 5, 3)), device, requires_grad=True)
    assert F.cross_entropy(spatial, to_device(_class_targets((2, 3), 5), device)).grad_fn == "cross_entropy"


# --- cross_entropy: class probabilities ----------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "weight", "smoothing", "weight+smoothing"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (3,)], ids=str)
def test_cross_entropy_probabilities_match_torch(device, shape, option, reduction):
    """Gradients of the logits, the probabilities and the class weights, as PyTorch gives them."""
    torch = _torch()
    class_axis = 0 if len(shape) == 1 else 1
    arrays = [rng(0).normal(size=shape) * 2, _probabilities(shape, class_axis=class_axis)]
    if "weight" in option:
        arrays.append(rng(3).uniform(0.2, 2.0, size=shape[class_axis]))
    kw = {"reduction": reduction, "label_smoothing": 0.3 if "smoothing" in option else 0.0}
    _compare(device, lambda x, t, *w: F.cross_entropy(x, t, *w, **kw),
             lambda x, t, *w: torch.nn.functional.cross_entropy(x, t, *w, **kw), arrays)


def test_probabilities_in_float32_stay_float32(device):
    logits = to_device(rng(0).normal(size=(3, 4)), device, dtype="float32", requires_grad=True)
    probs = to_device(_probabilities((3, 4)), device, dtype="float32")
    loss = F.cross_entropy(logits, probs, label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == gpunn.float32 and logits.grad.dtype == gpunn.float32
    # the one-hot probabilities of integer classes give the integer-class loss
    classes = _class_targets((3,), 4)
    onehot = to_device(np.eye(4)[classes], device, dtype="float32")
    np.testing.assert_allclose(F.cross_entropy(logits, onehot).item(),
                               F.cross_entropy(logits, to_device(classes, device)).item(), rtol=1e-6)


# --- binary_cross_entropy_with_logits: weight and pos_weight -------------------------------------------


BCE_WEIGHTS = {  # (weight shape, pos_weight shape) for (4, 3) logits
    "weight-full": ((4, 3), None),
    "weight-per-row": ((4, 1), None),
    "weight-scalar": ((), None),
    "pos-per-class": (None, (3,)),
    "pos-one": (None, (1,)),
    "both": ((3,), (4, 3)),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", BCE_WEIGHTS)
def test_bce_with_logits_weights_match_torch(device, case, reduction):
    torch = _torch()
    weight_shape, pos_shape = BCE_WEIGHTS[case]
    logits = rng(0).normal(size=(4, 3)) * 3
    target = rng(1).uniform(0, 1, size=(4, 3))
    target[0] = [0.0, 1.0, 1.0]
    weight = None if weight_shape is None else rng(2).uniform(0.2, 2.0, size=weight_shape)
    pos_weight = None if pos_shape is None else rng(3).uniform(0.2, 3.0, size=pos_shape)

    def ours(x, t):
        w = None if weight is None else to_device(weight, device)
        p = None if pos_weight is None else to_device(pos_weight, device)
        return F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=p)

    def theirs(x, t):
        w = None if weight is None else torch.tensor(weight)
        p = None if pos_weight is None else torch.tensor(pos_weight)
        return torch.nn.functional.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=p)

    _compare(device, ours, theirs, [logits, target])


def test_bce_weight_and_pos_weight_gradients(device):
    """PyTorch refuses gradients for weight and pos_weight; gpunn gives them: finite differences."""
    leaves = [to_device(a, device, requires_grad=True) for a in
              (rng(0).normal(size=(3, 2)), rng(1).uniform(size=(3, 2)), rng(2).uniform(0.5, 2, size=(3, 1)),
               rng(3).uniform(0.5, 3, size=(2,)))]
    assert gradcheck(lambda x, t, w, p: F.binary_cross_entropy_with_logits(x, t, w, pos_weight=p), leaves)


def test_bce_stays_finite_for_huge_logits_with_pos_weight(device):
    logits = to_device(np.array([-800.0, 800.0, 0.0]), device, requires_grad=True)
    target = to_device(np.array([1.0, 0.0, 1.0]), device)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=to_device(np.array([2.0]), device),
                                              reduction="none")
    loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [2 * 800.0, 800.0, 2 * np.log(2)], rtol=1e-12)
    np.testing.assert_allclose(logits.grad.numpy(), [-2.0, 1.0, -1.0], rtol=1e-12)


# --- mse_loss: broadcasting ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", [((3, 1), (3,)), ((2, 3), (3,)), ((3,), (2, 1, 3))], ids=str)
def test_mse_loss_broadcasts_with_a_warning_as_torch(device, shapes, reduction):
    torch = _torch()
    arrays = [rng(0).normal(size=shapes[0]), rng(1).normal(size=shapes[1])]
    with pytest.warns(UserWarning, match=r"broadcast to .* reshape one"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using a target size")  # torch's own
            _compare(device, lambda x, t: F.mse_loss(x, t, reduction=reduction),
                     lambda x, t: torch.nn.functional.mse_loss(x, t, reduction=reduction), arrays)


def test_mse_loss_same_shapes_do_not_warn(device):
    x = to_device(rng(0).normal(size=(2, 3)), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.mse_loss(x, x * 2)


# --- modules ------------------------------------------------------------------------------------------


def test_loss_modules_pass_the_options(device):
    torch = _torch()
    logits = rng(0).normal(size=(2, 3, 4))
    probs = _probabilities((2, 3, 4))
    class_weight = rng(3).uniform(0.5, 2, size=3)
    ours = nn.CrossEntropyLoss(class_weight, label_smoothing=0.1).to(device)
    theirs = torch.nn.CrossEntropyLoss(torch.tensor(class_weight), label_smoothing=0.1)
    np.testing.assert_allclose(ours(to_device(logits, device), to_device(probs, device)).item(),
                               theirs(torch.tensor(logits), torch.tensor(probs)).item(), rtol=1e-6)
    bce = nn.BCEWithLogitsLoss(to_device(np.ones((1, 4)), device), reduction="sum",
                               pos_weight=to_device(np.array([1.0, 2.0, 3.0, 4.0]), device))
    torch_bce = torch.nn.BCEWithLogitsLoss(torch.ones(1, 4), reduction="sum", pos_weight=torch.tensor([1.0, 2, 3, 4]))
    x, t = logits[0], probs[0]  # (3, 4)
    np.testing.assert_allclose(bce(to_device(x, device), to_device(t, device)).item(),
                               torch_bce(torch.tensor(x), torch.tensor(t)).item(), rtol=1e-12)
    assert "pos_weight" in dict(bce.named_buffers())


def test_bce_module_buffers_move_with_the_module():
    module = nn.BCEWithLogitsLoss(pos_weight=[2.0, 3.0]).to("strict:1")
    assert module.pos_weight.device == gpunn.device("strict:1") and module.weight is None
    x = gpunn.zeros(4, 2, device="strict:1")
    assert module(x, gpunn.ones(4, 2, device="strict:1")).device == x.device


# --- errors -------------------------------------------------------------------------------------------


def test_bad_targets_say_what_to_pass(device):
    logits = gpunn.zeros(2, 3, 4, device=device)
    with pytest.raises(gpunn.ShapeError, match=r"shape \(2, 4\).*class axis 1.*probabilities"):
        F.cross_entropy(logits, gpunn.zeros(2, 3, dtype="int64", device=device))
    with pytest.raises(gpunn.DTypeError, match=r"must be floating point.*\.float\(\)"):
        F.cross_entropy(logits, gpunn.zeros(2, 3, 4, dtype="int64", device=device))
    with pytest.raises(gpunn.DTypeError, match="integer class"):
        F.cross_entropy(logits, gpunn.zeros(2, 4, device=device))
    with pytest.raises(ValueError, match="ignore_index applies to integer class targets only"):
        F.cross_entropy(logits, gpunn.zeros(2, 3, 4, device=device), ignore_index=0)
    with pytest.raises(gpunn.ShapeError, match="class axis"):
        F.cross_entropy(gpunn.zeros((), device=device), gpunn.zeros((), dtype="int64", device=device))
    with pytest.raises(gpunn.ShapeError, match=r"nll_loss.*shape \(2, 4\)") as info:
        F.nll_loss(logits, gpunn.zeros(2, 3, 4, device=device))
    assert "probabilities" not in str(info.value)  # nll_loss takes integer classes only, as in PyTorch
    with pytest.raises(gpunn.ShapeError, match=r"weight must hold one value per class, shape \(3,\)"):
        F.cross_entropy(logits, gpunn.zeros(2, 3, 4, device=device), gpunn.ones(4, device=device))


def test_bad_bce_and_mse_arguments_say_what_to_do(device):
    x = gpunn.zeros(4, 3, device=device)
    with pytest.raises(gpunn.ShapeError, match=r"weight of shape \(5, 3\) does not broadcast.*\(4, 3\)"):
        F.binary_cross_entropy_with_logits(x, x, gpunn.ones(5, 3, device=device))
    with pytest.raises(gpunn.ShapeError, match=r"pos_weight of shape \(2, 4, 3\) does not broadcast"):
        F.binary_cross_entropy_with_logits(x, x, pos_weight=gpunn.ones(2, 4, 3, device=device))
    with pytest.raises(gpunn.ShapeError, match="give the target the logits' shape"):
        F.binary_cross_entropy_with_logits(x, gpunn.zeros(4, device=device))
    with pytest.raises(TypeError, match="reduction='sum' by keyword"):
        F.binary_cross_entropy_with_logits(x, x, "sum")
    with pytest.raises(TypeError, match="reduction='sum' by keyword"):
        nn.BCEWithLogitsLoss("sum")
    with pytest.raises(gpunn.ShapeError, match="do not broadcast; reshape one"):
        F.mse_loss(x, gpunn.zeros(3, 4, device=device))


# --- negative control ---------------------------------------------------------------------------------


def test_negative_control_the_torch_comparison_catches_a_wrong_class_axis():
    """The checks above would fail for plausible mistakes: reading (N, C, d) logits with the class
    axis last, or dividing a probability-target mean by the class-weight sum (the integer-class rule)."""
    torch = _torch()
    logits, target = rng(0).normal(size=(2, 3, 3)), _class_targets((2, 3), 3)

    def classes_last(x, t):
        return F.cross_entropy(x.reshape(-1, 3), t.reshape(-1))

    with pytest.raises(AssertionError):
        _compare(gpunn.device("cpu"), classes_last, torch.nn.functional.cross_entropy, [logits, target], grads=[0])

    x, probs, weight = rng(0).normal(size=(4, 3)), _probabilities((4, 3)), rng(3).uniform(0.2, 2.0, size=3)

    def weight_sum_mean(x, t, w):
        return F.cross_entropy(x, t, w, reduction="sum") / (t * w).sum()

    with pytest.raises(AssertionError):
        _compare(gpunn.device("cpu"), weight_sum_mean, torch.nn.functional.cross_entropy, [x, probs, weight])


# --- cross-entropy and nll options ---------------------------------------------------------------


def weighted_ce_ref(logits, target, weight, ignore_index, reduction, smoothing):
    """PyTorch's documented formula, row by row in float64."""
    n, c = logits.shape
    w = np.ones(c) if weight is None else weight
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    losses, denominator = np.zeros(n), 0.0
    for i, y in enumerate(target):
        if y == ignore_index:
            continue
        losses[i] = -(1 - smoothing) * w[y] * logp[i, y] - smoothing / c * (w * logp[i]).sum()
        denominator += w[y]
    return losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.sum() / denominator


CE_OPTIONS = [dict(weight=True), dict(ignore_index=1), dict(label_smoothing=0.2),
              dict(weight=True, ignore_index=-100, label_smoothing=0.1)]


@pytest.mark.parametrize("options", CE_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_options_forward_and_gradient(device, options, reduction):
    g = rng(12)
    host = g.normal(size=(5, 4))
    ignored = -100 if options.get("ignore_index", -100) == -100 else 2
    target_host = np.array([1, 3, ignored, 1, 0])
    weight_host = g.uniform(0.5, 2, size=4) if options.get("weight") else None
    ignore = options.get("ignore_index", -100)
    smoothing = options.get("label_smoothing", 0.0)
    x = to_device(host, device, requires_grad=True)
    target = gpunn.tensor(target_host, device=device)
    weight = None if weight_host is None else to_device(weight_host, device)
    fn = lambda t: F.cross_entropy(t, target, weight, ignore_index=ignore, reduction=reduction,  # noqa: E731
                                   label_smoothing=smoothing)
    expected = weighted_ce_ref(host, target_host, weight_host, ignore, reduction, smoothing)
    assert_close(fn(x), expected, device=device, dtype="float64", rtol=1e-10)
    wrong = weighted_ce_ref(host, target_host, weight_host, ignore, reduction, smoothing + 0.05)
    assert not np.allclose(fn(x).numpy(), wrong)  # negative control
    gradcheck(fn, [x])
    if smoothing == 0:
        logp = x.log_softmax(axis=1)
        assert_close(F.nll_loss(logp, target, weight, ignore_index=ignore, reduction=reduction), expected, rtol=1e-10)
        gradcheck(lambda t: F.nll_loss(t.log_softmax(axis=1), target, weight, ignore_index=ignore,
                                       reduction=reduction), [x])


def test_ignored_targets_get_no_gradient_and_pass_the_label_check():
    x = gpunn.tensor(rng(13).normal(size=(3, 4)), requires_grad=True)
    assert np.isfinite(F.cross_entropy(x, gpunn.tensor([2, 7, 7]), ignore_index=7).item())
    for ignore_index in (7, -100):  # only the ignored value may lie outside [0, classes)
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            F.cross_entropy(x, gpunn.tensor([2, -100, 7]), ignore_index=ignore_index)
    loss = F.cross_entropy(x, gpunn.tensor([2, -100, 1]))  # the default ignore_index is honoured on the cpu
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy()[1], 0)
    assert np.abs(x.grad.numpy()[[0, 2]]).min() > 0
    with pytest.raises(TypeError, match="reduction='sum'"):
        F.cross_entropy(x, gpunn.tensor([0, 1, 2]), "sum")
    with pytest.raises(gpunn.ShapeError, match="weight"):
        F.cross_entropy(x, gpunn.tensor([0, 1, 2]), gpunn.ones(3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_options_agree_with_torch(reduction):
    torch = pytest.importorskip("torch")
    g = rng(14)
    host, target = g.normal(size=(6, 5)), np.array([4, 0, -100, 2, 2, 3])
    weight = g.uniform(0.5, 2, size=5)
    for kwargs in (dict(), dict(label_smoothing=0.15), dict(ignore_index=2)):
        ours = nn.CrossEntropyLoss(gpunn.tensor(weight), reduction=reduction, **kwargs)
        theirs = torch.nn.CrossEntropyLoss(torch.tensor(weight), reduction=reduction, **kwargs)
        t = target if "ignore_index" not in kwargs else np.where(target == -100, 1, target)
        x, xt = gpunn.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
        y, yt = ours(x, gpunn.tensor(t)), theirs(xt, torch.tensor(t))
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        y.sum().backward()
        yt.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        lp = host - np.log(np.exp(host).sum(1, keepdims=True))
        nll = nn.NLLLoss(gpunn.tensor(weight), reduction=reduction, ignore_index=kwargs.get("ignore_index", -100))
        nll_t = torch.nn.NLLLoss(torch.tensor(weight), reduction=reduction,
                                 ignore_index=kwargs.get("ignore_index", -100))
        np.testing.assert_allclose(nll(gpunn.tensor(lp), gpunn.tensor(t)).numpy(),
                                   nll_t(torch.tensor(lp), torch.tensor(t)).numpy(), rtol=1e-10, atol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_targets_are_skipped_by_the_default_losses_on_every_device(device, reduction):
    from gpunn import functional as F

    logits = np.random.default_rng(3).standard_normal((4, 3))
    labels = np.array([2, -100, 0, -100])
    kept = labels != -100
    lse = np.log(np.exp(logits).sum(axis=1))
    per_row = np.where(kept, lse - logits[np.arange(4), np.where(kept, labels, 0)], 0.0)
    expected = {"mean": per_row.sum() / kept.sum(), "sum": per_row.sum(), "none": per_row}[reduction]
    for loss_of in (lambda x, t: F.cross_entropy(x, t, reduction=reduction),
                    lambda x, t: F.nll_loss(F.log_softmax(x, axis=1), t, reduction=reduction)):
        x = gpunn.tensor(logits, device=device, requires_grad=True)
        loss = loss_of(x, gpunn.tensor(labels, device=device))
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
        loss.sum().backward()
        assert np.all(x.grad.numpy()[~kept] == 0)  # ignored rows get no gradient
        assert np.any(x.grad.numpy()[kept] != 0)


# --- binary_cross_entropy, l1, smooth_l1 and huber losses; one_hot, normalize, cosine_similarity ---
# Values against NumPy formulas on every device, against PyTorch where it is installed, and against
# hard-coded PyTorch values where that is simplest.


def _reduce(per, reduction):
    return per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()


def _bce(p, t):
    return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))


def _smooth_l1(d, beta):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def _huber(d, delta):
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))


LOSSES = {  # name: (gpunn function of (input, target, reduction), NumPy per-element loss)
    "binary_cross_entropy": (lambda x, t, r: F.binary_cross_entropy(x, t, reduction=r), _bce),
    "l1_loss": (lambda x, t, r: F.l1_loss(x, t, reduction=r), lambda x, t: np.abs(x - t)),
    "smooth_l1_loss": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.7),
                       lambda x, t: _smooth_l1(x - t, 0.7)),
    "huber_loss": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.6), lambda x, t: _huber(x - t, 0.6)),
}


def _loss_inputs(name):
    if name == "binary_cross_entropy":  # probabilities and soft targets
        return rng(1).uniform(0.1, 0.9, size=(4, 3)), rng(2).uniform(0, 1, size=(4, 3))
    x = rng(1).normal(size=(4, 3))
    return x, x + rng(2).choice([-1.3, -0.2, 0.3, 1.1], size=(4, 3))  # both branches, away from the kinks


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_values_and_gradients(device, name, reduction):
    fn, per_element = LOSSES[name]
    x, t = _loss_inputs(name)
    leaves = [to_device(x, device, requires_grad=True), to_device(t, device, requires_grad=True)]
    out = fn(*leaves, reduction)
    assert_close(out, _reduce(per_element(x, t), reduction), device=device, dtype=gpunn.float64)
    gradcheck(lambda a, b: fn(a, b, reduction), leaves)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_and_modules_match_torch(name):
    torch = _torch()
    x, t = _loss_inputs(name)
    modules = {"binary_cross_entropy": ("BCELoss", {}), "l1_loss": ("L1Loss", {}),
               "smooth_l1_loss": ("SmoothL1Loss", {"beta": 0.7}), "huber_loss": ("HuberLoss", {"delta": 0.6})}
    cls, kw = modules[name]
    for reduction in ("mean", "sum", "none"):
        ours = getattr(nn, cls)(reduction=reduction, **kw)
        theirs = getattr(torch.nn, cls)(reduction=reduction, **kw)
        gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        got, want = ours(gx, gpunn.tensor(t)), theirs(tx, torch.tensor(t))
        assert_close(got, want.detach().numpy())
        got.sum().backward()
        want.sum().backward()
        assert_close(gx.grad, tx.grad.numpy())


def test_bce_at_saturated_probabilities_matches_torch():
    """A sigmoid that saturated to exactly 0 or 1: PyTorch's clamped logs and finite gradient."""
    p, t = np.array([0.0, 1.0, 0.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    x = gpunn.tensor(p, requires_grad=True)
    loss = F.binary_cross_entropy(x, gpunn.tensor(t), gpunn.tensor([1.0, 2.0, 1.0, 1.0, 3.0]), reduction="sum")
    loss.backward()
    assert_close(loss, np.array(200 + 3 * math.log(2)))  # PyTorch's values
    assert_close(x.grad, np.array([0.0, 0.0, -1e12, 1e12, -6.0]), rtol=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.binary_cross_entropy(gpunn.tensor([1.5]), gpunn.tensor([1.0]))
    with pytest.raises(ShapeError, match="shape"):
        nn.BCELoss()(gpunn.tensor([0.5, 0.5]), gpunn.tensor([1.0]))


def test_regression_losses_warn_on_broadcast_shapes_and_smooth_l1_beta_zero():
    x, t = gpunn.tensor([[1.0], [2.0]]), gpunn.tensor([0.0, 4.0])
    with pytest.warns(UserWarning, match="l1_loss: target shape"):
        F.l1_loss(x, t)
    assert_close(F.smooth_l1_loss(gpunn.tensor([1.0, -3.0]), gpunn.tensor([0.0, 0.0]), beta=0.0), np.array(2.0))
    with pytest.raises(ValueError, match="delta"):
        F.huber_loss(x, x, delta=0.0)


def test_one_hot(device):
    labels = to_device(np.array([[0, 3], [2, 2]]), device)
    out = F.one_hot(labels, 4)
    assert_close(out, np.eye(4, dtype=np.int64)[[[0, 3], [2, 2]]], device=device, dtype=gpunn.int64)
    assert F.one_hot(labels).shape == (2, 2, 4)  # num_classes from the largest label
    with pytest.raises(DTypeError, match="integer"):
        F.one_hot(to_device(np.array([0.0, 1.0]), device))
    if device.type == "cpu":
        with pytest.raises(ValueError, match="smaller than num_classes"):
            F.one_hot(labels, 3)


def test_one_hot_normalize_cosine_similarity_match_torch():
    torch = _torch()
    labels = np.array([1, 0, 4])
    assert_close(F.one_hot(gpunn.tensor(labels)), torch.nn.functional.one_hot(torch.tensor(labels)).numpy())
    x1, x2 = rng(3).normal(size=(3, 4)), rng(4).normal(size=(1, 4))
    x1[1] = 0.0  # a zero row: eps takes over
    for fn, args in [(F.normalize, ((x1,), {})), (F.normalize, ((x1,), {"p": 1.0, "dim": 0})),
                     (F.cosine_similarity, ((x1, x2), {})), (F.cosine_similarity, ((x1, x2), {"dim": -1, "eps": 0.5}))]:
        ours = [gpunn.tensor(a, requires_grad=True) for a in args[0]]
        theirs = [torch.tensor(a, requires_grad=True) for a in args[0]]
        got, want = fn(*ours, **args[1]), getattr(torch.nn.functional, fn.__name__)(*theirs, **args[1])
        assert_close(got, want.detach().numpy())
        (got * got).sum().backward()
        (want * want).sum().backward()
        for a, b in zip(ours, theirs):
            assert_close(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert_close(nn.CosineSimilarity(dim=0)(gpunn.tensor(x1), gpunn.tensor(x1)), np.array([1.0, 1.0, 1.0, 1.0]))


def test_normalize_and_cosine_similarity_gradients(device):
    x1, x2 = away_from_zero((3, 4), seed=5), away_from_zero((3, 4), seed=6)
    gradcheck(lambda a: F.normalize(a, dim=1), [to_device(x1, device, requires_grad=True)])
    leaves = [to_device(x1, device, requires_grad=True), to_device(x2, device, requires_grad=True)]
    out = F.cosine_similarity(*leaves)
    expected = (x1 * x2).sum(1) / np.linalg.norm(x1, axis=1) / np.linalg.norm(x2, axis=1)
    assert_close(out, expected, device=device)
    gradcheck(F.cosine_similarity, leaves)


def test_negative_controls_the_references_tell_near_misses_apart():
    """The loss references are sharp: Huber is not smooth L1 once delta != 1."""
    x, t = _loss_inputs("huber_loss")
    huber = F.huber_loss(gpunn.tensor(x), gpunn.tensor(t), reduction="none", delta=0.6).numpy()
    assert not np.allclose(huber, _smooth_l1(x - t, 0.6))
    assert np.allclose(huber, 0.6 * _smooth_l1(x - t, 0.6))  # the documented relation holds
