"""DeployedLogits: what exported artifacts output keeps softmax and ranking, in a range int8 resolves."""

import torch

from edgekd.host.export.onnx_export import LOGIT_FLOOR, DeployedLogits


class Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0 * x.sum()


def test_softmax_and_top_k_are_unchanged_and_the_range_is_bounded():
    logits = torch.randn(3, 4, 64) * 15
    out = DeployedLogits(Fixed(logits))(torch.zeros(1))
    assert torch.all(out.amax(-1) == 0) and torch.all(out >= -LOGIT_FLOOR)
    # clamped beams gain at most 63 x e^-LOGIT_FLOOR of the mass (2% at 8): the ranking is what matters
    bound = 63 * float(torch.exp(torch.tensor(-LOGIT_FLOOR)))
    assert float((out.softmax(-1) - logits.softmax(-1)).abs().max()) <= bound
    kept = (logits - logits.amax(-1, keepdim=True)) > -LOGIT_FLOOR   # beams above the floor keep their order
    for b in range(3):
        for h in range(4):
            mask = kept[b, h]
            assert torch.equal(out[b, h][mask].argsort(), logits[b, h][mask].argsort())
