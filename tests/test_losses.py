"""Tests for cerepro.training.losses: hand-computed values, invariances, gradients, input errors, dtypes.

Expected values are written out with ``math`` from the formulas, never taken from the functions.
"""

import inspect
import math

import pytest
import torch
from tolerance import FLOAT64_REL, assert_float_close

from cerepro.objectives import PAPER_OBJECTIVES, ObjectiveError, get, registry
from cerepro.training.losses import (
    adr_mse,
    bce,
    distill_ranknet,
    hinge,
    infonce,
    listnet_kl,
    margin_mse,
)

OBJECTIVES = {slug: record.function() for slug, record in registry().items()}  # slug -> the loss
SUPERVISED = ("bce", "hinge", "infonce")
TEACHER = ("margin-mse", "distill-ranknet", "adr-mse", "listnet-kl")  # distillation objectives
LISTS = ("distill-ranknet", "adr-mse", "listnet-kl")  # teacher-ordered lists, no positive


def tensor(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(x))


# --- hand-computed values -------------------------------------------------------------------------


def test_bce_hand_values():
    # s = (0, 0), positive in column 0: -(log σ(0) + log(1 - σ(0))) / 2 = -(2 log ½) / 2 = ln 2
    assert bce(tensor([[0.0, 0.0]])).item() == pytest.approx(math.log(2), rel=1e-12)
    # s = (2, -1): -log σ(2) = log(1 + e^-2); -log(1 - σ(-1)) = -log σ(1) = log(1 + e^-1)
    expected = (softplus(-2.0) + softplus(-1.0)) / 2
    assert bce(tensor([[2.0, -1.0]])).item() == pytest.approx(expected, rel=1e-12)
    # soft label y = 0.25 on s = 1: 0.25 log(1 + e^-1) + 0.75 log(1 + e^1)
    expected = 0.25 * softplus(-1.0) + 0.75 * softplus(1.0)
    got = bce(tensor([[1.0]]), labels=tensor([[0.25]])).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_bce_all_negative_group_and_ragged_mean_over_groups():
    # group 0: three negatives, -log(1 - σ(s)) = log(1 + e^s) each -> mean over 3
    # group 1: positive s=0 (ln 2) and negative s=3 (log(1 + e^3)) -> mean over 2; slot 2 padded
    scores = tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 7.0]])
    labels = tensor([[0, 0, 0], [1, 0, 9]])  # the 9 sits in a padded slot: ignored
    mask = torch.tensor([[True, True, True], [True, True, False]])
    group0 = (softplus(1.0) + softplus(-2.0) + softplus(0.5)) / 3
    group1 = (math.log(2) + softplus(3.0)) / 2
    got = bce(scores, mask, labels=labels).item()
    assert got == pytest.approx((group0 + group1) / 2, rel=1e-12)


def test_hinge_hand_values():
    # s_pos - s_neg = 1 = margin: max(0, 1 - 1) = 0
    assert hinge(tensor([[3.0, 2.0]])).item() == 0.0
    # s = (1, 0.5, 2): max(0, 1 - 0.5) = 0.5 and max(0, 1 - (1 - 2)) = 2 -> (0.5 + 2) / 2 = 1.25
    assert hinge(tensor([[1.0, 0.5, 2.0]])).item() == pytest.approx(1.25, rel=1e-12)
    # margin 0.2: max(0, 0.2 - 0.5) = 0 and max(0, 0.2 + 1) = 1.2 -> 0.6
    got = hinge(tensor([[1.0, 0.5, 2.0]]), margin=0.2).item()
    assert got == pytest.approx(0.6, rel=1e-12)
    # positive in column 1 by labels: negatives 0 and 1.5 -> max(0, 1 - 2) = 0, max(0, 1 - 0.5)
    got = hinge(tensor([[0.0, 2.0, 1.5]]), labels=tensor([[0, 1, 0]])).item()
    assert got == pytest.approx(0.25, rel=1e-12)


def test_infonce_hand_values():
    # two equal scores: -log(e^a / (2 e^a)) = ln 2
    assert infonce(tensor([[0.3, 0.3]])).item() == pytest.approx(math.log(2), rel=1e-12)
    # s = (1, 0, 2), positive 1: -1 + log(e + 1 + e²)
    expected = -1.0 + math.log(math.e + 1.0 + math.e**2)
    assert infonce(tensor([[1.0, 0.0, 2.0]])).item() == pytest.approx(expected, rel=1e-12)
    # τ = 0.5: s/τ = (2, 0, 4) -> -2 + log(e² + 1 + e⁴)
    expected = -2.0 + math.log(math.e**2 + 1.0 + math.e**4)
    got = infonce(tensor([[1.0, 0.0, 2.0]]), temperature=0.5).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # positive in column 2 by labels: -2 + log(1 + e + e²)
    expected = -2.0 + math.log(1.0 + math.e + math.e**2)
    got = infonce(tensor([[0.0, 1.0, 2.0]]), labels=tensor([[0, 0, 1]])).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # ragged: three equal scores -> ln 3; two equal scores plus a padded slot -> ln 2
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = infonce(tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 100.0]]), mask).item()
    assert got == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-12)


def test_margin_mse_hand_values():
    # student margins (1, 2) equal teacher margins (5-4, 5-3): 0
    got = margin_mse(tensor([[2.0, 1.0, 0.0]]), teacher=tensor([[5.0, 4.0, 3.0]])).item()
    assert got == 0.0
    # student margins (1, 2), teacher margins (1-2, 1-(-1)) = (-1, 2): ((1+1)² + 0²) / 2 = 2
    got = margin_mse(tensor([[2.0, 1.0, 0.0]]), teacher=tensor([[1.0, 2.0, -1.0]])).item()
    assert got == pytest.approx(2.0, rel=1e-12)
    # two groups: (1 - 0)² = 1 and (0 - 3)² = 9 -> mean 5
    got = margin_mse(tensor([[1.0, 0.0], [0.0, 0.0]]), teacher=tensor([[0.0, 0.0], [3.0, 0.0]]))
    assert got.item() == pytest.approx(5.0, rel=1e-12)


def test_distill_ranknet_hand_values():
    # one pair, equal scores: log(1 + e^0) = ln 2
    got = distill_ranknet(tensor([[0.0, 0.0]]), teacher=tensor([[1.0, 0.0]])).item()
    assert got == pytest.approx(math.log(2), rel=1e-12)
    # s = (1, 0, 2), teacher order 0 > 1 > 2: pairs (0,1): s0-s1 = 1, (0,2): -1, (1,2): -2
    expected = (softplus(-1.0) + softplus(1.0) + softplus(2.0)) / 3
    got = distill_ranknet(tensor([[1.0, 0.0, 2.0]]), teacher=tensor([[3.0, 2.0, 1.0]])).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # teacher tie between 0 and 1 forms no pair: only (0,2): -1 and (1,2): -2
    expected = (softplus(1.0) + softplus(2.0)) / 2
    got = distill_ranknet(tensor([[1.0, 0.0, 2.0]]), teacher=tensor([[3.0, 3.0, 1.0]])).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # teacher as ranks (2, 1, 3) -> scores -rank: order 1 > 0 > 2; pairs (1,0): -1, (1,2): -2,
    # (0,2): -1
    expected = (softplus(1.0) + softplus(2.0) + softplus(1.0)) / 3
    got = distill_ranknet(tensor([[1.0, 0.0, 2.0]]), teacher=-tensor([[2.0, 1.0, 3.0]])).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_adr_mse_hand_values():
    # objectives.md: equal scores -> r̂ = (1.5, 1.5), r = (1, 2): (0.5²/1 + 0.5²/log2 3) / 2
    expected = (0.5**2 / 1 + 0.5**2 / math.log2(3)) / 2
    got = adr_mse(tensor([[0.0, 0.0]]), teacher=tensor([[1.0, 0.0]])).item()
    assert got == pytest.approx(expected, rel=1e-12)

    # s = (1, 0, 2), r = (1, 2, 3); r̂_i = 1 + Σ_{j≠i} σ(s_j - s_i)
    approx = [
        1 + sigmoid(-1) + sigmoid(1),
        1 + sigmoid(1) + sigmoid(2),
        1 + sigmoid(-1) + sigmoid(-2),
    ]
    errors = [(approx[i] - (i + 1)) ** 2 for i in range(3)]
    scores, teacher = tensor([[1.0, 0.0, 2.0]]), tensor([[3.0, 2.0, 1.0]])
    log2 = sum(e / math.log2(i + 2) for i, e in enumerate(errors)) / 3
    reciprocal = sum(e / (i + 1) for i, e in enumerate(errors)) / 3
    plain = sum(errors) / 3
    assert adr_mse(scores, teacher=teacher).item() == pytest.approx(log2, rel=1e-12)
    got = adr_mse(scores, teacher=teacher, discount="reciprocal").item()
    assert got == pytest.approx(reciprocal, rel=1e-12)
    assert adr_mse(scores, teacher=teacher, discount=None).item() == pytest.approx(plain, rel=1e-12)

    # T = 2: σ((s_j - s_i) / 2)
    approx = [
        1 + sigmoid(-0.5) + sigmoid(0.5),
        1 + sigmoid(0.5) + sigmoid(1.0),
        1 + sigmoid(-0.5) + sigmoid(-1.0),
    ]
    expected = sum((a - (i + 1)) ** 2 / math.log2(i + 2) for i, a in enumerate(approx)) / 3
    got = adr_mse(scores, teacher=teacher, temperature=2.0).item()
    assert got == pytest.approx(expected, rel=1e-12)

    # partial teacher tie (1, 1, 0) broken by position: r = (1, 2, 3); s = 0 -> r̂ = (2, 2, 2)
    # (1²/log2 2 + 0 + 1²/log2 4) / 3 = (1 + 0.5) / 3 = 0.5
    got = adr_mse(tensor([[0.0, 0.0, 0.0]]), teacher=tensor([[1.0, 1.0, 0.0]])).item()
    assert got == pytest.approx(0.5, rel=1e-12)


def test_adr_mse_padded_slots_are_no_competitors():
    # 2 real + 1 padded slot with a huge score: a padded competitor would add σ(1e6) = 1 to r̂
    mask = torch.tensor([[True, False, True]])
    got = adr_mse(tensor([[0.0, 1e6, 0.0]]), mask, teacher=tensor([[1.0, 50.0, 0.0]])).item()
    assert got == pytest.approx((0.5**2 / 1 + 0.5**2 / math.log2(3)) / 2, rel=1e-12)


def test_listnet_kl_hand_values():
    # p = softmax(ln 3, 0) = (3/4, 1/4), q = (1/2, 1/2): 3/4 ln(3/2) + 1/4 ln(1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = listnet_kl(tensor([[0.0, 0.0]]), teacher=tensor([[math.log(3), 0.0]])).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # student equals teacher: KL = 0
    got = listnet_kl(tensor([[1.0, 2.0, 3.0]]), teacher=tensor([[1.0, 2.0, 3.0]])).item()
    assert got == pytest.approx(0.0, abs=1e-15)
    # τ = 2 both: q = softmax(1, 0) = (e, 1)/(1+e), p = softmax(0, 1) = (1, e)/(1+e)
    # KL = p0 ln(p0/q0) + p1 ln(p1/q1) = p0 (-1) + p1 (1) = (e - 1)/(e + 1); times τ² = 4
    expected = 4 * (math.e - 1) / (math.e + 1)
    got = listnet_kl(tensor([[2.0, 0.0]]), teacher=tensor([[0.0, 2.0]]), temperature=2.0).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # teacher as ranks (1, 2, 3) -> -rank, τ_t = 1: p ∝ (e^-1, e^-2, e^-3); τ = 2 and s = 0 give
    # q = 1/3 each: KL = Σ p_i ln(3 p_i), times τ² = 4
    z = sum(math.exp(-r) for r in (1, 2, 3))
    p = [math.exp(-r) / z for r in (1, 2, 3)]
    expected = 4 * sum(pi * math.log(3 * pi) for pi in p)
    got = listnet_kl(
        tensor([[0.0, 0.0, 0.0]]),
        teacher=-tensor([[1.0, 2.0, 3.0]]),
        temperature=2.0,
        teacher_temperature=1.0,
    ).item()
    assert got == pytest.approx(expected, rel=1e-12)


# --- property tests: padding, permutation, gradients ----------------------------------------------

LENGTHS = (4, 3, 2)  # a ragged batch: groups of these many real candidates


def groups_for(slug, seed=0):
    """One dict per group: 1-D float64 scores, labels (or None) and teacher (or None), no ties."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for n in LENGTHS:
        scores = torch.randn(n, generator=gen, dtype=torch.float64)
        teacher = torch.randperm(n, generator=gen).to(torch.float64) + torch.rand(n, generator=gen)
        labels = None
        if slug == "bce":
            labels = (torch.rand(n, generator=gen) > 0.5).to(torch.float64)
        groups.append(
            {
                "scores": scores,
                "labels": labels,
                "teacher": teacher if "teacher" in get(slug).accepts else None,
            }
        )
    return groups


def pad(groups, width, columns):
    """Pack groups into (Q, width) with garbage in the padded slots; columns[q] = real positions."""
    garbage = torch.tensor([1e30, float("nan"), -float("inf"), 7.0, -1e30], dtype=torch.float64)
    q = len(groups)
    packed = {
        key: garbage[torch.arange(q * width) % 5].reshape(q, width).clone() for key in ("scores", "labels", "teacher")
    }
    mask = torch.zeros(q, width, dtype=torch.bool)
    for row, (group, cols) in enumerate(zip(groups, columns)):
        mask[row, cols] = True
        for key in packed:
            if group[key] is not None:
                packed[key][row, cols] = group[key]
    has = {key: groups[0][key] is not None for key in packed}
    return (
        packed["scores"],
        mask,
        packed["labels"] if has["labels"] else None,
        packed["teacher"] if has["teacher"] else None,
    )


def real_columns(slug):
    """Real positions of the LENGTHS groups in a 7-wide batch, padding interleaved; column 0 is
    real where it holds the positive, and padded in some groups elsewhere."""
    if slug in ("hinge", "infonce", "margin-mse"):
        return [[0, 2, 3, 5], [0, 1, 4], [0, 6]]
    return [[1, 2, 4, 6], [0, 3, 5], [4, 6]]


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_padding_changes_neither_value_nor_gradients(slug):
    groups = groups_for(slug)
    # reference: each group alone, unpadded; the batch loss is the mean over groups
    alone_values, alone_grads = [], []
    for group in groups:
        scores = group["scores"][None].clone().requires_grad_()
        labels = None if group["labels"] is None else group["labels"][None]
        teacher = None if group["teacher"] is None else group["teacher"][None]
        value = OBJECTIVES[slug](scores, None, labels=labels, teacher=teacher)
        value.backward()
        alone_values.append(value.item())
        alone_grads.append(scores.grad[0] / len(groups))

    columns = real_columns(slug)
    scores, mask, labels, teacher = pad(groups, 7, columns)
    scores.requires_grad_()
    value = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    value.backward()
    assert value.item() == pytest.approx(sum(alone_values) / len(groups), rel=1e-12)
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[~mask] == 0).all()
    for row, cols in enumerate(columns):
        assert_float_close(scores.grad[row, cols], alone_grads[row], rel=FLOAT64_REL, scale=alone_grads)


@pytest.mark.parametrize("slug", ["hinge", "infonce", "margin-mse"])
def test_padding_with_labels_may_cover_column_0(slug):
    # with labels the positive can sit anywhere, and column 0 may be a padded slot
    scores = tensor([[9.0, 0.5, 0.1, -0.3]])
    teacher = tensor([[float("nan"), 2.0, 0.0, 1.0]])
    mask = torch.tensor([[False, True, True, True]])
    labels = tensor([[1.0, 1.0, 0.0, 0.0]])  # the 1 in padded column 0 is garbage
    kwargs = {"teacher": teacher} if slug == "margin-mse" else {}
    padded = OBJECTIVES[slug](scores, mask, labels=labels, **kwargs)
    kwargs = {"teacher": teacher[:, 1:]} if slug == "margin-mse" else {}
    plain = OBJECTIVES[slug](scores[:, 1:], **kwargs)  # positive now in column 0
    assert padded.item() == pytest.approx(plain.item(), rel=1e-12)


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_permuting_groups_keeps_value(slug):
    scores, mask, labels, teacher = pad(groups_for(slug), 7, real_columns(slug))
    order = torch.tensor([2, 0, 1])
    pick = lambda x: None if x is None else x[order]  # noqa: E731
    before = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    after = OBJECTIVES[slug](pick(scores), pick(mask), labels=pick(labels), teacher=pick(teacher))
    assert after.item() == pytest.approx(before.item(), rel=1e-12)


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_permuting_candidates_keeps_value(slug):
    # list objectives and labelled bce: any joint permutation of the columns; objectives with
    # the positive in column 0: any permutation of the negatives (columns 1..)
    scores, mask, labels, teacher = pad(groups_for(slug), 7, real_columns(slug))
    gen = torch.Generator().manual_seed(1)
    if slug in ("hinge", "infonce", "margin-mse"):
        order = torch.cat([torch.tensor([0]), 1 + torch.randperm(6, generator=gen)])
    else:
        order = torch.randperm(7, generator=gen)
    pick = lambda x: None if x is None else x[:, order]  # noqa: E731
    before = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    after = OBJECTIVES[slug](pick(scores), pick(mask), labels=pick(labels), teacher=pick(teacher))
    assert after.item() == pytest.approx(before.item(), rel=1e-12)


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_gradcheck_float64(slug):
    scores, mask, labels, teacher = pad(groups_for(slug, seed=3), 7, real_columns(slug))
    scores = torch.where(mask, scores, 0.0).requires_grad_()  # gradcheck perturbs every entry

    def loss(s):
        return OBJECTIVES[slug](s, mask, labels=labels, teacher=teacher)

    assert torch.autograd.gradcheck(loss, (scores,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_gradients_finite_on_extreme_scores(slug):
    scores, mask, labels, teacher = pad(groups_for(slug), 7, real_columns(slug))
    scores = torch.where(mask, scores * 1e4, scores).requires_grad_()  # saturate every sigmoid
    OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher).backward()
    assert torch.isfinite(scores.grad).all()


# --- input errors ---------------------------------------------------------------------------------

S = tensor([[1.0, 0.0, 2.0], [0.5, 0.2, 0.1]])
T = tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
M_EMPTY = torch.tensor([[True, True, True], [False, False, False]])
M_COL0 = torch.tensor([[True, True, True], [False, True, True]])
NO_POSITIVE = tensor([[1, 0, 0], [0, 0, 0]])
TWO_POSITIVES = tensor([[1, 1, 0], [0, 0, 1]])
T_NAN = tensor([[3.0, float("nan"), 1.0], [1.0, 3.0, 2.0]])
T_INF = tensor([[3.0, 2.0, 1.0], [float("inf"), 3.0, 2.0]])
T_TIES = tensor([[3.0, 2.0, 1.0], [2.0, 2.0, 2.0]])
SINGLE = torch.tensor([[True, True, True], [True, False, False]])


def needs(slug):
    """The inputs an objective requires, well formed: the teacher T where it needs one."""
    return {"teacher": T} if slug in TEACHER else {}


ERROR_CASES = [
    # (slug, scores, mask, extra keyword arguments, message pattern)
    *[(slug, S[0], None, needs(slug), "must be 2-D") for slug in OBJECTIVES],
    *[(slug, S[None], None, needs(slug), "must be 2-D") for slug in OBJECTIVES],
    *[(slug, S, M_EMPTY, needs(slug), "all-masked") for slug in OBJECTIVES],
    *[(slug, S, M_EMPTY[:, :2], needs(slug), "mask shape") for slug in OBJECTIVES],
    *[(slug, S, M_COL0.long(), needs(slug), "mask must be bool") for slug in OBJECTIVES],
    ("bce", S.long(), None, {}, "floating point"),
    *[(slug, S, None, {"labels": NO_POSITIVE[:, :2]}, "labels shape") for slug in SUPERVISED],
    *[(slug, S, None, {"teacher": T[:1]}, "teacher shape") for slug in TEACHER],
    *[(slug, S, None, {"teacher": T_NAN}, "NaN or inf") for slug in TEACHER],
    *[(slug, S, None, {"teacher": T_INF}, "NaN or inf") for slug in TEACHER],
    *[(slug, S, None, {}, "needs teacher") for slug in TEACHER],
    *[(slug, S, None, {"teacher": T}, "does not use teacher") for slug in SUPERVISED],
    *[(slug, S, None, {"teacher": T, "labels": NO_POSITIVE}, "does not use labels") for slug in LISTS],
    *[(slug, S, M_COL0, needs(slug), r"positive slot \(column 0\) is masked") for slug in (*SUPERVISED, "margin-mse")],
    *[
        (slug, S, None, {**needs(slug), "labels": NO_POSITIVE}, r"group\(s\) \[1\] have no positive")
        for slug in ("hinge", "infonce", "margin-mse")
    ],
    *[
        (slug, S, None, {**needs(slug), "labels": TWO_POSITIVES}, "more than one positive")
        for slug in ("hinge", "infonce", "margin-mse")
    ],
    *[(slug, S, SINGLE, needs(slug), "no valid negative") for slug in ("hinge", "margin-mse")],
    *[(slug, S, None, {"teacher": T_TIES}, r"group\(s\) \[1\] have ties only") for slug in LISTS],
    *[(slug, S, SINGLE, {"teacher": T}, "ties only") for slug in LISTS],
    ("bce", S, None, {"labels": tensor([[1, 0, 2], [0, 0, 1]])}, r"labels outside \[0, 1\]"),
    ("bce", S, None, {"labels": tensor([[1, 0, float("nan")], [0, 0, 1]])}, "labels outside"),
    ("infonce", S, None, {"temperature": 0.0}, "temperature must be > 0"),
    ("adr-mse", S, None, {"teacher": T, "temperature": -1.0}, "temperature must be > 0"),
    ("adr-mse", S, None, {"teacher": T, "discount": "log10"}, "unknown discount 'log10'"),
    ("listnet-kl", S, None, {"teacher": T, "teacher_temperature": 0.0}, "teacher_temperature"),
]


@pytest.mark.parametrize(
    "slug, scores, mask, kwargs, match",
    ERROR_CASES,
    ids=[f"{case[0]}:{case[4]}" for case in ERROR_CASES],
)
def test_malformed_input_raises(slug, scores, mask, kwargs, match):
    with pytest.raises(ValueError, match=match) as caught:
        OBJECTIVES[slug](scores, mask, **kwargs)
    assert str(caught.value).startswith(slug)  # every message names the objective


def test_bce_allows_all_negative_groups_and_infonce_a_lone_positive():
    # all-negative: mean of log(1 + e^s) per group
    group0 = (softplus(1.0) + softplus(0.0) + softplus(2.0)) / 3
    group1 = (softplus(0.5) + softplus(0.2) + softplus(0.1)) / 3
    got = bce(S, labels=torch.zeros_like(S)).item()
    assert got == pytest.approx((group0 + group1) / 2, rel=1e-12)
    # group 0: -1 + log(e + 1 + e²); group 1 holds only its positive: -log 1 = 0
    expected = (-1.0 + math.log(math.e + 1.0 + math.e**2) + 0.0) / 2
    assert infonce(S, SINGLE).item() == pytest.approx(expected, rel=1e-12)


# --- dtypes and devices ---------------------------------------------------------------------------


def example_inputs(slug, dtype, device="cpu"):
    scores, mask, labels, teacher = pad(groups_for(slug), 7, real_columns(slug))
    convert = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
    return convert(scores), mask.to(device), convert(labels), convert(teacher)


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_float32_in_float32_out(slug):
    scores, mask, labels, teacher = example_inputs(slug, torch.float32)
    value = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    assert value.dtype == torch.float32 and value.dim() == 0


@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_bf16_autocast_on_cpu(slug):
    scores, mask, labels, teacher = example_inputs(slug, torch.bfloat16)
    scores.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    value.backward()
    assert value.dtype == torch.float32
    assert scores.grad.dtype == torch.bfloat16 and torch.isfinite(scores.grad).all()
    # the same bf16 inputs computed in float64: only the float32 arithmetic differs
    f64 = lambda x: None if x is None else x.double()  # noqa: E731
    reference = OBJECTIVES[slug](f64(scores.detach()), mask, labels=f64(labels), teacher=f64(teacher))
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("slug", list(OBJECTIVES))
def test_cuda_bf16_autocast_matches_cpu(slug):
    scores, mask, labels, teacher = example_inputs(slug, torch.bfloat16, device="cuda")
    scores.requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = OBJECTIVES[slug](scores, mask, labels=labels, teacher=teacher)
    value.backward()
    assert value.device.type == "cuda" and value.dtype == torch.float32
    assert torch.isfinite(scores.grad).all() and (scores.grad[~mask] == 0).all()
    cpu = lambda x: None if x is None else x.detach().cpu().double()  # noqa: E731
    reference = OBJECTIVES[slug](cpu(scores), mask.cpu(), labels=cpu(labels), teacher=cpu(teacher))
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)


# --- registry -------------------------------------------------------------------------------------


def test_registry_resolves_every_slug():
    assert set(PAPER_OBJECTIVES) == set(OBJECTIVES) - {"listnet-kl"}
    assert list(OBJECTIVES) == [*PAPER_OBJECTIVES, "listnet-kl"]  # the paper's table order
    for slug, function in OBJECTIVES.items():
        record = get(slug)
        assert record.requires <= record.accepts <= {"labels", "teacher"}
        assert function.__doc__ and "Reference" in function.__doc__
        assert f"slug ``{slug}``" in function.__doc__  # the record names the loss of its own slug
    assert get("margin-mse").requires == {"teacher"} and get("bce").requires == set()


def test_registry_shares_one_calling_convention():
    for slug, function in OBJECTIVES.items():
        parameters = inspect.signature(function).parameters
        assert list(parameters)[:4] == ["scores", "mask", "labels", "teacher"], slug
        assert parameters["labels"].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["teacher"].kind is inspect.Parameter.KEYWORD_ONLY
        hyper = list(parameters)[4:]
        assert all(parameters[name].default is not inspect.Parameter.empty for name in hyper)
        assert hyper == list(get(slug).defaults), slug  # every keyword argument declared, none more


def test_unknown_slug_names_it_and_lists_known_ones():
    with pytest.raises(ObjectiveError, match=r"unknown objective 'rank-mse'.*adr-mse.*listnet-kl"):
        get("rank-mse")
