"""Pure contrastive loss functions (no Ray, no models): easy to check by hand.

Notation follows the method notes: for a query q, positives P and negatives N,

    l(q, P, N) = -1/|P| * sum_{k+ in P} log( exp(q.k+/t) / (exp(q.k+/t) + sum_{n in N} exp(q.n/t)) )

Positives and negatives are given as key matrices plus boolean masks, so one batched call
serves every query of a batch. All features are expected to be L2-normalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(query: torch.Tensor, pos_keys: torch.Tensor, pos_mask: torch.Tensor,
                     neg_keys: torch.Tensor, neg_mask: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Mean of l(q, P(q), N(q)) over the queries that have at least one positive.

    query: (B, d); pos_keys: (P, d) with pos_mask (B, P); neg_keys: (M, d) with neg_mask (B, M).
    """
    pos_logits = query @ pos_keys.T / temperature
    neg_logits = (query @ neg_keys.T / temperature).masked_fill(~neg_mask, float("-inf"))
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)        # -inf when no negatives
    # log( e^p / (e^p + sum e^n) ) = p - logaddexp(p, logsumexp(n))
    log_prob = pos_logits - torch.logaddexp(pos_logits, neg_lse)
    pos = pos_mask.float()
    per_query = -(log_prob * pos).sum(1) / pos.sum(1).clamp(min=1.0)
    has_pos = pos_mask.any(1)
    if not has_pos.any():
        return query.sum() * 0.0  # keeps the graph; nothing to learn from this batch
    return per_query[has_pos].mean()


def negative_mask(query_parts: torch.Tensor, key_parts: torch.Tensor, rule: str) -> torch.Tensor:
    """Which keys count as negatives: other partitions only (default) or all of them."""
    if rule == "other_partitions":
        return query_parts[:, None] != key_parts[None, :]
    if rule == "all":
        return torch.ones(len(query_parts), len(key_parts), dtype=torch.bool,
                          device=query_parts.device)
    raise ValueError(f"unknown negatives rule '{rule}' (use 'other_partitions' or 'all')")


def fresh_negatives(q: torch.Tensor, q_parts: torch.Tensor, k: torch.Tensor,
                    k_parts: torch.Tensor, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch negatives computed by this step's networks: the batch's momentum keys of
    *other* partitions (``keys``), plus the other partitions' queries (``keys_and_queries``).

    Why: if every negative is stale (bank rows from earlier networks, remote rows a round
    old) while the positives are fresh keys, the cheapest way to lower the loss is to tell
    fresh from stale, and the embeddings collapse (see the method notes). Same-partition
    in-batch embeddings are positives, never negatives. Returns keys (M, d) and mask (B, M).
    """
    if rule == "none":
        return q.new_zeros(0, q.shape[1]), q_parts.new_zeros(len(q), 0, dtype=torch.bool)
    keys, masks = [k], [q_parts[:, None] != k_parts[None, :]]
    if rule == "keys_and_queries":
        keys.append(q)
        masks.append(q_parts[:, None] != q_parts[None, :])   # excludes the query itself too
    elif rule != "keys":
        raise ValueError(f"unknown fresh negatives rule '{rule}' "
                         f"(use 'keys', 'keys_and_queries' or 'none')")
    return torch.cat(keys), torch.cat(masks, 1)


def fcl_losses(q: torch.Tensor, q_parts: torch.Tensor, k: torch.Tensor, k_parts: torch.Tensor,
               queue: torch.Tensor, queue_parts: torch.Tensor, temperature: float,
               negatives: str = "other_partitions", fresh: str = "keys",
               queue_remote: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FCL's two terms for a batch of queries.

    q, q_parts: main-encoder embeddings of view 1 and their partitions (B, d), (B,).
    k, k_parts: momentum embeddings of view 2 of the same batch: the local positives are the
        keys of the same partition (the query's own second view and the other volumes' slices).
    queue, queue_parts: Q', the K features sampled from the local and remote banks.
    negatives: which rows of Q' are negatives (``other_partitions`` or ``all``, see
        :func:`negative_mask`); fresh: the in-batch negatives added (:func:`fresh_negatives`).
    queue_remote: (K,) bool, True for rows of Q' that came from other clients. The structural
        matching positives Lambda(q) are the same-partition rows among those (the paper's
        global matching: other sites' features); None counts every row of Q' (old reading).
    Returns (L_local, L_remote); L_remote is 0 when Q' holds no remote row of q's partition.
    """
    batch_keys, batch_mask = fresh_negatives(q, q_parts, k, k_parts, fresh)
    neg_keys = torch.cat([queue, batch_keys])
    neg = torch.cat([negative_mask(q_parts, queue_parts, negatives), batch_mask], 1)
    local = contrastive_loss(q, k, q_parts[:, None] == k_parts[None, :], neg_keys, neg,
                             temperature)
    matching = q_parts[:, None] == queue_parts[None, :]
    if queue_remote is not None:
        matching = matching & queue_remote[None, :]
    remote = contrastive_loss(q, queue, matching, neg_keys, neg, temperature)
    return local, remote


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: each view's positive is the other view of the same image; the
    other 2B-2 embeddings of the batch are negatives."""
    z = torch.cat([z1, z2])
    n = len(z1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


# ----------------------------------------------------------------------------- baselines
def rotation_loss(logits: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotation prediction (Gidaris et al., ICLR 2018): cross-entropy of a 4-way classifier
    over the quarter turns 0, 90, 180, 270 degrees (labels 0..3)."""
    return F.cross_entropy(logits, rotations)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's online codes (Caron et al., NeurIPS 2020): Sinkhorn-Knopp on exp(scores / eps).

    scores: (B, K) similarities of B embeddings to K prototypes. Returns (B, K) soft
    assignments whose rows sum to 1 and whose columns each sum to about B / K (the
    equipartition constraint that stops every sample landing on one prototype).
    """
    q = torch.exp((scores - scores.max()) / epsilon).T          # (K, B); max-shift for stability
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k                  # each prototype gets 1/K
        q = q / q.sum(dim=0, keepdim=True) / b                  # each sample gets 1/B
    return (q * b).T


def swav_loss(scores1: torch.Tensor, scores2: torch.Tensor, codes1: torch.Tensor,
              codes2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SwAV's swapped prediction: view 1's code is predicted from view 2's scores and
    vice versa; -sum_k q_k log softmax(p / t)_k, averaged over samples and both swaps."""
    loss12 = -(codes1 * F.log_softmax(scores2 / temperature, dim=1)).sum(1).mean()
    loss21 = -(codes2 * F.log_softmax(scores1 / temperature, dim=1)).sum(1).mean()
    return 0.5 * (loss12 + loss21)


def alignment_loss(z: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """FedCA's alignment term as used here: 1 - cosine similarity between each local
    representation and the reference (global-model) representation of the same input."""
    return (1.0 - F.cosine_similarity(z, reference.detach(), dim=1)).mean()
