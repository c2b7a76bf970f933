"""Training objectives for cross-encoder re-rankers, as pure functions of score tensors.

Each objective maps the student's raw scores ``(Q, D)`` (``Q`` query groups, ``D`` candidates per
group, one logit per query-passage pair) to a scalar to minimise. The six objectives compared by
Morand et al. (arXiv:2603.03010) are here under their slugs, plus one listwise extension:

    bce, hinge, infonce, margin-mse, distill-ranknet, adr-mse   (the paper)
    listnet-kl                                                  (extension, not in the paper)

One calling convention for all, so a training loop needs no per-objective branch::

    loss = get(slug).function()(scores, mask, labels=labels, teacher=teacher, **config.hyperparameters)

- ``mask``: bool ``(Q, D)``, True where a candidate exists, or None (every slot is real). Padded
  slots may hold anything (even NaN) in ``scores``, ``labels`` and ``teacher``: they change neither
  the value nor any gradient, and their own gradient is exactly 0.
- ``labels``: relevance ``(Q, D)`` (bool, int or float), or None. Supervised objectives then find
  the positive in column 0, the layout of MS MARCO triples and of 1 pos + 7 neg groups.
- ``teacher``: teacher scores ``(Q, D)``, higher = better. A teacher ranking (1 = best) is turned
  into scores by the caller, ``teacher = -rank``.
- An objective refuses an input it does not use (``bce(..., teacher=t)`` is a ValueError, not a
  silent no-op). Each objective's record in :mod:`cerepro.objectives` says which inputs it needs and
  reads, and its hyperparameters, so params validation rejects, say, ``margin-mse`` on a training
  source without teacher scores before training.

Reduction: every objective averages within a group over that group's valid elements (candidates,
negatives, pairs or positions), then averages the groups with equal weight. With equal-size,
unpadded groups this is the plain mean over all elements that the reference implementations use.

Scores of any float dtype and device are accepted; the arithmetic runs in at least float32 (bf16
under autocast included) and the result is a float32 (or float64) scalar. Input checks read tensor
values, one host sync each, which is negligible next to a cross-encoder forward pass.

What this module must not do: see a model, tokenizer, batch object or file; sample negatives;
move tensors between devices; or turn rankings into scores (``loss_curves`` only tabulates the
objectives on fixed inputs for the book). The formulas and their provenance are
explained at length in the book's Objectives page; docstrings here state formula, shapes,
reduction and source.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from cerepro.objectives import DISCOUNTS, get, registry

# --- input checks shared by the objectives -------------------------------------------------------


def _groups(rows: Tensor) -> str:
    """The first few group indices where the bool ``rows`` (Q,) is True, for error messages."""
    idx = rows.nonzero().flatten().tolist()
    return "[" + ", ".join(map(str, idx[:5])) + (", ...]" if len(idx) > 5 else "]")


def _like_scores(name: str, key: str, value: Tensor, scores: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name}: {key} must be a tensor, got {type(value).__name__}")
    if value.shape != scores.shape:
        raise ValueError(f"{name}: {key} shape {tuple(value.shape)} does not match scores shape {tuple(scores.shape)}")
    if value.device != scores.device:
        raise ValueError(f"{name}: {key} is on {value.device} but scores are on {scores.device}")


def _greater_than_zero(name: str, value: float, key: str) -> None:
    if not value > 0:
        raise ValueError(f"{name}: {key} must be > 0, got {value}")


def _inputs(
    name: str, scores: Tensor, mask: Tensor | None, labels: Tensor | None, teacher: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Check the inputs of objective ``name`` and return them ready for arithmetic.

    Returns ``(scores, mask, labels, teacher)``: floats promoted to at least float32, padded slots
    set to 0 (so garbage there never reaches a value or a gradient), labels and teacher detached.
    """
    if not isinstance(scores, Tensor):
        raise ValueError(f"{name}: scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name}: scores must be 2-D (Q, D), got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"{name}: scores must be floating point, got {scores.dtype}")
    if scores.numel() == 0:
        raise ValueError(f"{name}: scores are empty, shape {tuple(scores.shape)}")
    for key, given in (("labels", labels), ("teacher", teacher)):
        if given is None and key in get(name).requires:
            raise ValueError(f"{name} needs {key} (Q, D); got {key}=None")
        if given is not None and key not in get(name).accepts:
            raise ValueError(f"{name} does not use {key}; pass {key}=None")

    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    else:
        _like_scores(name, "mask", mask, scores)
        if mask.dtype != torch.bool:
            raise ValueError(f"{name}: mask must be bool (True = real candidate), got {mask.dtype}")
    empty = ~mask.any(dim=1)
    if empty.any():
        raise ValueError(f"{name}: group(s) {_groups(empty)} are all-masked (no valid candidate)")

    dtype = torch.promote_types(scores.dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 stays
    scores = scores.to(dtype).masked_fill(~mask, 0.0)
    if labels is not None:
        _like_scores(name, "labels", labels, scores)
        labels = torch.where(mask, labels.detach().to(dtype), 0.0)
    if teacher is not None:
        _like_scores(name, "teacher", teacher, scores)
        teacher = teacher.detach().to(dtype)
        broken = (~torch.isfinite(teacher) & mask).any(dim=1)
        if broken.any():
            raise ValueError(f"{name}: teacher scores are NaN or inf at valid slots of group(s) {_groups(broken)}")
        teacher = torch.where(mask, teacher, 0.0)
    return scores, mask, labels, teacher


def _positive_column(name: str, mask: Tensor, labels: Tensor | None) -> Tensor:
    """Index (Q,) of each group's single positive: column 0, or the valid slot with label > 0."""
    if labels is None:
        if not mask[:, 0].all():
            raise ValueError(f"{name}: the positive slot (column 0) is masked in group(s) {_groups(~mask[:, 0])}")
        return torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    positives = (labels > 0) & mask
    count = positives.sum(dim=1)
    if (count == 0).any():
        raise ValueError(
            f"{name}: group(s) {_groups(count == 0)} have no positive (label > 0 at a valid slot); "
            f"{name} needs exactly one per group"
        )
    if (count > 1).any():
        raise ValueError(
            f"{name}: group(s) {_groups(count > 1)} have more than one positive; {name} needs exactly one per group"
        )
    return positives.to(torch.uint8).argmax(dim=1)


def _negatives(name: str, mask: Tensor, positive: Tensor) -> Tensor:
    """Bool (Q, D): the valid slots other than each group's positive; at least one per group."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    negatives = mask & (columns[None, :] != positive[:, None])
    none = ~negatives.any(dim=1)
    if none.any():
        raise ValueError(f"{name}: group(s) {_groups(none)} have no valid negative")
    return negatives


def _teacher_order(name: str, teacher: Tensor, mask: Tensor) -> None:
    """Refuse groups whose valid teacher scores are all equal: they carry no order to distil."""
    top = teacher.masked_fill(~mask, -torch.inf).amax(dim=1)
    bottom = teacher.masked_fill(~mask, torch.inf).amin(dim=1)
    ties = top == bottom
    if ties.any():
        raise ValueError(
            f"{name}: group(s) {_groups(ties)} have ties only in the teacher scores (or a single "
            f"valid candidate): no order to learn from"
        )


def _mean_over_groups(values: Tensor, valid: Tensor) -> Tensor:
    """Mean over groups of each group's mean over its valid elements; values, valid: (Q, N)."""
    per_group = torch.where(valid, values, 0.0).sum(dim=1) / valid.sum(dim=1)  # (Q,)
    return per_group.mean()


# --- the paper's six objectives -------------------------------------------------------------------


def bce(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
) -> Tensor:
    """Pointwise binary cross-entropy on raw scores (slug ``bce``).

    ``loss = -(1/n) Σ_i [y_i log σ(s_i) + (1 - y_i) log(1 - σ(s_i))]`` over the ``n`` valid
    candidates of a group, then the mean over groups. On MS MARCO triples (``D = 2``, positive in
    column 0) this is the mean over the ``2Q`` (query, passage) pairs, as in the paper.

    Args:
        scores: float ``(Q, D)`` raw student logits (no sigmoid applied).
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: ``(Q, D)`` targets in ``[0, 1]``; None = column 0 positive (1), the rest 0. A group
            with no positive is allowed (the formula needs none).
        teacher: refused (must be None).

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    Reference: the pointwise baseline of Nogueira and Cho, Passage Re-ranking with BERT,
    arXiv:1901.04085 (2019); as trained in Morand et al., arXiv:2603.03010 (2026).
    """
    s, mask, y, _ = _inputs("bce", scores, mask, labels, teacher)
    if y is None:  # column 0 positive, every other slot negative
        y = F.one_hot(_positive_column("bce", mask, None), s.shape[1]).to(s.dtype)
    else:
        outside = (~((y >= 0) & (y <= 1)) & mask).any(dim=1)  # NaN fails both comparisons
        if outside.any():
            raise ValueError(f"bce: labels outside [0, 1] in group(s) {_groups(outside)}")
    loss = F.binary_cross_entropy_with_logits(s, y, reduction="none")  # (Q, D)
    return _mean_over_groups(loss, mask)


def hinge(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
    margin: float = 1.0,
) -> Tensor:
    """Pairwise hinge (margin ranking) loss of the positive against each negative (slug ``hinge``).

    ``loss = (1/k) Σ_j max(0, m - (s_pos - s_neg_j))`` over the ``k`` valid negatives of a group,
    then the mean over groups. The paper trains it on MS MARCO triples (``k = 1``), ``m = 1``.

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: ``(Q, D)`` with exactly one valid slot > 0 per group (the positive); None = the
            positive is column 0. Every other valid slot is a negative; at least one is needed.
        teacher: refused (must be None).
        margin: ``m``.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    Reference: Herbrich, Graepel, Obermayer, Large Margin Rank Boundaries for Ordinal Regression
    (2000); as trained in Morand et al., arXiv:2603.03010 (2026).
    """
    s, mask, y, _ = _inputs("hinge", scores, mask, labels, teacher)
    positive = _positive_column("hinge", mask, y)  # (Q,)
    negatives = _negatives("hinge", mask, positive)  # (Q, D)
    s_pos = s.gather(1, positive[:, None])  # (Q, 1)
    loss = F.relu(margin - (s_pos - s))  # (Q, D)
    return _mean_over_groups(loss, negatives)


def infonce(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Listwise softmax cross-entropy of the positive within its group (slug ``infonce``).

    ``loss = -log( exp(s_pos/τ) / Σ_{d valid} exp(s_d/τ) )`` per group, then the mean over groups.
    The paper uses groups of 1 positive + 7 hard negatives from the ColBERTv2 top-500, ``τ = 1``;
    negatives are the group's own, not in-batch. A group holding only its positive gives 0.

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: ``(Q, D)`` with exactly one valid slot > 0 per group; None = the positive is
            column 0.
        teacher: refused (must be None).
        temperature: ``τ`` > 0.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    Reference: van den Oord, Li, Vinyals, Representation Learning with Contrastive Predictive
    Coding, arXiv:1807.03748 (2018); as trained in Morand et al., arXiv:2603.03010 (2026).
    """
    _greater_than_zero("infonce", temperature, "temperature")
    s, mask, y, _ = _inputs("infonce", scores, mask, labels, teacher)
    positive = _positive_column("infonce", mask, y)  # (Q,)
    log_p = (s / temperature).masked_fill(~mask, -torch.inf).log_softmax(dim=1)  # (Q, D)
    return -log_p.gather(1, positive[:, None]).mean()


def margin_mse(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
) -> Tensor:
    """Margin MSE distillation: match the teacher's positive-negative margins (slug ``margin-mse``).

    ``loss = (1/k) Σ_j [(s_pos - s_neg_j) - (t_pos - t_neg_j)]²`` over the ``k`` valid negatives of
    a group, then the mean over groups. The paper uses MS MARCO triples (``k = 1``) with the
    Hofstätter T2 teacher (mean of BERT-Base, BERT-Large and ALBERT-Large cat models); the
    several-negative form is the one of Sentence-Transformers and Lightning IR.

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: ``(Q, D)`` with exactly one valid slot > 0 per group; None = the positive is
            column 0. At least one valid negative is needed.
        teacher: float ``(Q, D)`` teacher scores, required, finite at valid slots.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    Reference: Hofstätter, Althammer, Schröder, Sertkan, Hanbury, Improving Efficient Neural
    Ranking Models with Cross-Architecture Knowledge Distillation, arXiv:2010.02666 (2020).
    """
    s, mask, y, t = _inputs("margin-mse", scores, mask, labels, teacher)
    positive = _positive_column("margin-mse", mask, y)  # (Q,)
    negatives = _negatives("margin-mse", mask, positive)  # (Q, D)
    student_margin = s.gather(1, positive[:, None]) - s  # (Q, D)
    teacher_margin = t.gather(1, positive[:, None]) - t  # (Q, D)
    return _mean_over_groups((student_margin - teacher_margin) ** 2, negatives)


def distill_ranknet(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
) -> Tensor:
    """RankNet on every pair the teacher orders (slug ``distill-ranknet``).

    ``loss = (1/|P|) Σ_{(i,j) in P} log(1 + exp(-(s_i - s_j)))`` with
    ``P = {(i, j) valid: t_i > t_j}`` per group, then the mean over groups. Teacher ties and padded
    slots form no pair. The paper distils a RankZephyr top-50 ranking, one query per step (so its
    per-pair mean and Lightning IR's ``RankNet``, which pools pairs across groups, agree).

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: refused (must be None).
        teacher: float ``(Q, D)`` teacher scores, higher = better (a ranking as ``-rank``),
            required; finite at valid slots, not all equal within a group.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    References: Burges et al., Learning to Rank using Gradient Descent, ICML 2005 (RankNet);
    Schlatt et al., Rank-DistiLLM, ECIR 2025, arXiv:2405.07920 (distillation from LLM rankings).
    """
    s, mask, _, t = _inputs("distill-ranknet", scores, mask, labels, teacher)
    _teacher_order("distill-ranknet", t, mask)
    valid_pair = mask[:, :, None] & mask[:, None, :]  # (Q, D, D)
    pairs = valid_pair & (t[:, :, None] > t[:, None, :])  # [q, i, j]: teacher prefers i over j
    loss = F.softplus(-(s[:, :, None] - s[:, None, :]))  # (Q, D, D)
    return _mean_over_groups(loss.flatten(1), pairs.flatten(1))


def adr_mse(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
    temperature: float = 1.0,
    discount: str | None = "log2",
) -> Tensor:
    """Approximate Discounted Rank MSE between the student's soft ranks and the teacher's ranks
    (slug ``adr-mse``).

    ``loss = (1/n) Σ_i w(r_i) (r̂_i - r_i)²`` over the ``n`` valid positions of a group, then the
    mean over groups, with the approximate rank
    ``r̂_i = 1 + Σ_{j ≠ i, j valid} σ((s_j - s_i) / T)`` (padded slots are no competitors) and
    ``r_i`` the teacher rank among the valid candidates (1 = best; ties broken by list position).
    The weight ``w(r) = 1 / log2(r + 1)`` (``discount="log2"``, the paper), ``1 / r``
    (``"reciprocal"``) or 1 (``None``) is applied before averaging, as in Lightning IR's
    ``ApproxRankMSE(discount="log2")`` after the paper authors' fix of February 2026.

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: refused (must be None).
        teacher: float ``(Q, D)`` teacher scores, higher = better (a ranking as ``-rank``; only the
            order matters), required; finite at valid slots, not all equal within a group.
        temperature: ``T`` > 0 of the sigmoid.
        discount: ``"log2"``, ``"reciprocal"`` or None.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    Reference: Schlatt, Fröbe, Scells, Zhuang, Koopman, Zuccon, Stein, Potthast, Hagen,
    Rank-DistiLLM: Closing the Effectiveness Gap Between Cross-Encoders and LLMs for Passage
    Re-ranking, ECIR 2025, arXiv:2405.07920.
    """
    _greater_than_zero("adr-mse", temperature, "temperature")
    if discount not in DISCOUNTS:
        raise ValueError(f"adr-mse: unknown discount {discount!r}; known: {DISCOUNTS}")
    s, mask, _, t = _inputs("adr-mse", scores, mask, labels, teacher)
    _teacher_order("adr-mse", t, mask)
    q, d = s.shape

    # r̂: [q, i, j] = σ((s_j - s_i) / T), summed over valid competitors j ≠ i
    beats = torch.sigmoid((s[:, None, :] - s[:, :, None]) / temperature)  # (Q, D, D)
    others = ~torch.eye(d, dtype=torch.bool, device=s.device)
    competitors = mask[:, None, :] & others  # (Q, D, D)
    approx_rank = 1.0 + torch.where(competitors, beats, 0.0).sum(dim=2)  # (Q, D)

    # r: teacher order among valid slots; padded slots sort last, a stable sort breaks ties
    order = t.masked_fill(~mask, -torch.inf).sort(dim=1, descending=True, stable=True).indices
    positions = torch.arange(1, d + 1, device=s.device).expand(q, d)
    rank = torch.empty_like(order).scatter_(1, order, positions).to(s.dtype)  # (Q, D)

    if discount == "log2":
        weight = 1.0 / torch.log2(rank + 1.0)
    elif discount == "reciprocal":
        weight = 1.0 / rank
    else:
        weight = torch.ones_like(rank)
    return _mean_over_groups(weight * (approx_rank - rank) ** 2, mask)


# --- extension: not tested by the paper -----------------------------------------------------------


def listnet_kl(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    labels: Tensor | None = None,
    teacher: Tensor | None = None,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> Tensor:
    """Soft-label listwise distillation: KL from the teacher's top-one distribution to the
    student's, both tempered (slug ``listnet-kl``; an extension, not among the paper's six).

    ``loss = τ² · Σ_{i valid} p_i (log p_i - log q_i)`` per group, then the mean over groups, with
    ``p = softmax(t / τ_t)`` and ``q = softmax(s / τ)`` over the group's valid candidates only.
    The KL sums over a distribution's support, so it is not divided by the list length; it differs
    from ListNet's cross-entropy by the teacher entropy, a constant, so gradients are ListNet's and
    a perfect match scores 0. The ``τ²`` factor keeps gradient size independent of ``τ`` (Hinton
    et al.).

    Why this one: the paper's two list losses keep only the teacher's order (distill-ranknet its
    pairs, adr-mse its ranks); this one also uses how confident the teacher is, when it gives
    scores. Given a ranking as ``teacher = -rank``, the target is ``p_i ∝ exp(-r_i / τ_t)``, a
    geometric decay down the list whose sharpness ``τ_t`` sets. Unlike the unmasked, untempered
    ``KLDivergence`` of Lightning IR it handles ragged lists and separate temperatures.

    Args:
        scores: float ``(Q, D)`` raw student logits.
        mask: bool ``(Q, D)``, True = real candidate; None = all real.
        labels: refused (must be None).
        teacher: float ``(Q, D)`` teacher scores, higher = better, or ``-rank``; required, finite
            at valid slots, not all equal within a group.
        temperature: student temperature ``τ`` > 0.
        teacher_temperature: ``τ_t`` > 0; None = ``τ``, as in Hinton et al.

    Returns:
        Scalar tensor, float32 (float64 for float64 scores).

    References: Cao, Qin, Liu, Tsai, Li, Learning to Rank: From Pairwise Approach to Listwise
    Approach, ICML 2007 (ListNet); Hinton, Vinyals, Dean, Distilling the Knowledge in a Neural
    Network, arXiv:1503.02531 (2015) (temperature and the τ² factor).
    """
    teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
    _greater_than_zero("listnet-kl", temperature, "temperature")
    _greater_than_zero("listnet-kl", teacher_temperature, "teacher_temperature")
    s, mask, _, t = _inputs("listnet-kl", scores, mask, labels, teacher)
    _teacher_order("listnet-kl", t, mask)
    # log-probabilities over valid slots; padded slots become 0 so 0 · (0 - 0) adds nothing
    log_q = (s / temperature).masked_fill(~mask, -torch.inf).log_softmax(dim=1)
    log_p = (t / teacher_temperature).masked_fill(~mask, -torch.inf).log_softmax(dim=1)
    log_q, log_p = log_q.masked_fill(~mask, 0.0), log_p.masked_fill(~mask, 0.0)  # (Q, D)
    p = torch.where(mask, log_p.exp(), 0.0)  # (Q, D)
    kl = (p * (log_p - log_q)).sum(dim=1)  # (Q,)
    return temperature**2 * kl.mean()


# --- curves for the book ---------------------------------------------------------------------------


def loss_curves(margins=None):
    """Each objective on one group of two passages, the first preferred by labels and teacher
    (teacher margin 2): scores ``(m/2, -m/2)``; value and d loss / d m for every margin m, as a
    table (objective, margin, value, gradient) for the book's Objectives page."""
    import pandas as pd

    margins = (
        torch.linspace(-6, 6, 49, dtype=torch.float64)
        if margins is None
        else torch.as_tensor(margins, dtype=torch.float64)
    )
    rows = []
    for slug, record in registry().items():
        function = record.function()

        def loss(m):  # one group per margin, (Q, 2); the loss is the mean of the groups' losses
            scores = torch.stack([m / 2, -m / 2], dim=1)
            teacher = torch.tensor([[1.0, -1.0]], dtype=torch.float64).expand(len(m), 2)
            return function(scores, None, **({"teacher": teacher} if "teacher" in record.accepts else {}))

        with torch.no_grad():
            values = torch.stack([loss(m.reshape(1)) for m in margins])
        m = margins.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(m) * len(m), m)  # groups weigh 1/Q each
        rows.append(
            pd.DataFrame(
                {"objective": slug, "margin": margins.numpy(), "value": values.numpy(), "gradient": grad.numpy()}
            )
        )
    return pd.concat(rows, ignore_index=True)
