"""FedCA: federated contrastive averaging (F. Zhang et al., "Federated unsupervised
representation learning", arXiv:2010.08982, 2020), a baseline of Wu et al. 2021.

What is implemented:
- dictionary module: MoCo-style instance discrimination at each client. A query (main
  encoder+head, view 1) has one positive, the momentum network's embedding of view 2 of the
  same slice; its negatives are K = ``pretrain.sample_size`` features drawn from the
  dictionary = this client's bank of momentum features U the features every other client
  shared last round (``exchange_size`` each). Partitions are ignored (instance-level, unlike
  FCL); the partition labels sent along are not used by this loss.
- alignment module: L_align = 1 - cos(z_local(x), z_ref(x)) on the batch, where z_ref is the
  *global model received at the start of the round* (frozen). Total L = L_con + beta * L_align
  with beta = ``align_weight`` (1.0).
- FedAvg of the main network, and of the momentum network when
  ``pretrain.aggregate_momentum`` (as FCL does).

Safeguards (issue: FedCA collapsed like FCL's old loss): the batch's other momentum keys are
negatives too (fresh ones, computed at this step, as in MoCo v3 / SimCLR), and bank copies of
the query's own slice are never its negatives (the bank remembers which slice a row came
from).

What is left out / changed: FedCA aligns every client to a base model trained by the server
on a small *public* alignment dataset that every client also holds. There is no public
cardiac set here and images must not move, so the reference is the current global model on
the client's own slices instead. The original's per-round refresh of the whole dictionary by
the global model is approximated by sharing a sample of each client's momentum bank.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from fcl_ray.methods.bank import local_and_remote, sample_features
from fcl_ray.methods.losses import alignment_loss, contrastive_loss
from fcl_ray.methods.base import Features, MomentumBankMethod


class FedCA(MomentumBankMethod):
    federated = True
    shares_features = True
    align_weight = 1.0
    # The reference is reset from the global model every round; saved anyway so a resumed
    # client holds exactly what it held.
    checkpointed = MomentumBankMethod.checkpointed + ("reference",)
    # Read by tests, never by a step.
    not_checkpointed = MomentumBankMethod.not_checkpointed + ("last_dictionary_size",)

    def __init__(self, cfg, slices, generator, device):
        super().__init__(cfg, slices, generator, device)
        self.reference = copy.deepcopy(self.net).requires_grad_(False)
        self.last_dictionary_size = 0

    def load_shared_state(self, state):
        super().load_shared_state(state)
        self.reference.load_state_dict(self.net.state_dict())   # this round's global model

    def compute_loss(self, remote: Optional[Features]):
        p = self.cfg.pretrain
        idx, parts = self.sampler.sample(p.volumes_per_batch, self.gen)
        x = self.slices.images[idx.to(self.device)]
        view1, view2 = self.view(x), self.view(x)
        q = self.embed(view1, parts)
        with torch.no_grad():
            self._momentum_update()
            k = self.momentum_net(view2)
            z_ref = self.reference(view1)
        # The dictionary: local bank rows (tagged with their slice) U the other clients' rows
        # (slice -1: never one of ours).
        local = self.bank.contents()
        feats, _, is_remote = local_and_remote(local, remote)
        slice_of = torch.full((len(feats),), -1, dtype=torch.long, device=self.device)
        slice_of[~is_remote] = self.bank.contents_slice_ids().to(self.device)
        self.last_dictionary_size = len(feats)
        negatives, neg_slice = sample_features(feats, slice_of, p.sample_size, self.gen)
        idx = idx.to(self.device)
        # Negatives of query i: dictionary rows of other slices (a bank copy of its own slice
        # is the same instance, not a negative) and the batch's other fresh keys.
        not_own = neg_slice[None, :] != idx[:, None]
        others = ~torch.eye(len(q), dtype=torch.bool, device=self.device)
        eye = ~others
        con = contrastive_loss(q, k, eye, torch.cat([negatives, k]),
                               torch.cat([not_own, others], 1), p.temperature)
        align = alignment_loss(q, z_ref)
        self.bank.push(k, parts.to(self.device), idx)
        return con + self.align_weight * align, {"loss_contrastive": con.item(),
                                                 "loss_align": align.item()}

    def shared_features(self):
        return self._bank_sample_to_share()
