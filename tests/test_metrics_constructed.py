"""The benchmark metrics on constructed cases whose answers are known by hand: class / group accuracy,
diversity, retrieval top-k, exact captions, the even/odd Spearman of bench samplers, the KV cache per position
scheme. (The benches themselves are checked in test_mm.py / test_metrics.py; these check the arithmetic.)"""

import pytest
import torch

from genkit.commands.bench_samplers import _ranking_agreement
from genkit.mm import MultimodalAR
from genkit.mm.evaluate import captioning, classifier_ceiling, text_to_image
from genkit.mm.positions import SCHEMES
from genkit.mm.tokens import encode_text


class FakeClassifier:
    """predict: the class written into pixel (0, 0, 0) of each uint8 image."""

    def predict(self, u8):
        return u8[:, 0, 0, 0].long()


class FakeFD:
    def __init__(self):
        self.seen = 0

    def update(self, u8):
        self.seen += len(u8)

    def compute(self):
        return float(self.seen)


def test_spearman_of_even_and_odd_rankings():
    def rows(even, odd, nfe=5):
        return {f"a{i}@{nfe}": {"nfe_budget": nfe, "fd_even": e, "fd_odd": o} for i, (e, o) in enumerate(zip(even, odd))}

    assert _ranking_agreement(rows([1, 2, 3, 4], [10, 20, 30, 40])) == {"5": 1.0}
    assert _ranking_agreement(rows([1, 2, 3, 4], [40, 30, 20, 10])) == {"5": -1.0}
    # one adjacent swap among 4: d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert _ranking_agreement(rows([1, 2, 3, 4], [1, 3, 2, 4])) == {"5": 0.8}
    both = {**rows([1, 2, 3], [3, 2, 1], nfe=10), **rows([5, 6], [6, 5], nfe=20)}   # 2 arms: no rho
    assert _ranking_agreement(both) == {"10": -1.0}


def test_classifier_ceiling_counts_class_and_group_hits():
    labels = torch.tensor([0, 1, 2, 3])
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 2, 2, 0])        # predictions: right, wrong, right, wrong
    groups = torch.tensor([0, 0, 1, 1])                     # 1 -> 2 crosses groups; 3 -> 0 crosses groups
    assert classifier_ceiling(images, labels, FakeClassifier(), groups) == {"class_accuracy": 0.5,
                                                                              "group_accuracy": 0.5}
    groups = torch.tensor([0, 1, 1, 0])                     # now 1 -> 2 and 3 -> 0 stay in their group
    assert classifier_ceiling(images, labels, FakeClassifier(), groups)["group_accuracy"] == 1.0


def test_text_to_image_accuracy_and_diversity_by_hand():
    """Caption k draws images whose pixel (0,0,0) encodes a class; the others are constant per image, so the
    pairwise RMS distance is known: images at values a and b differ by |a - b| everywhere."""
    draws = {0: [2.0 / 255 * 0 - 1, 1.0], 1: [2.0 / 255 * 3 - 1, 0.0]}   # first pixel -> class 0 / class 3

    class Pipe:
        def generate_units(self, cap, negative, n, rerank, generator, **kw):
            k = cap[0]
            vals = [0.0, 0.5, -0.5, 1.0][:n]
            x = torch.stack([torch.full((3, 8, 8), v) for v in vals])
            x[:, 0, 0, 0] = draws[k][0]
            return x

        def images_of(self, x):
            return x

    labels = torch.tensor([0, 1])                   # caption 0 -> class 0 (hit), caption 1 -> class 3 (miss)
    groups = torch.tensor([0, 1, 1, 1])             # class 3 is in class 1's group: a group hit
    out = text_to_image(Pipe(), [[0], [1]], labels, FakeFD(), FakeClassifier(), diversity_captions=1,
                        diversity_images=2, groups=groups, progress=False)
    assert out["class_accuracy"] == 0.5 and out["group_accuracy"] == 1.0 and out["n"] == 2 and out["fd"] == 2.0
    # caption 0's two images: values 0.0 and 0.5 everywhere but one pixel (-1 in both): RMS = 0.5 sqrt(191/192)
    assert out["diversity"] == pytest.approx(round(0.5 * (191 / 192) ** 0.5, 4), abs=1e-4)


def test_captioning_exact_match_and_retrieval_ranks_by_hand():
    names = [encode_text(t, 16) for t in ("a", "b", "c", "d", "e", "f", "g")]

    class Model:
        config = type("C", (), {"max_text_bytes": 16})()
        device = torch.device("cpu")

        def caption(self, x, max_new_tokens):
            return [names[int(i)] if int(i) != 2 else names[0] for i in x[:, 0]]     # image 2 is misnamed

        def rank_captions(self, x, captions):
            i = int(x[0, 0])
            scores = torch.arange(len(captions), dtype=torch.float) * -1.0         # name j scores -j
            scores[i] = -float(i) + 0.5 if i != 6 else -5.5   # image 6's true name ranks 6th of 7
            return scores

    class Pipe:
        model = Model()

        def units_of(self, x):
            return torch.arange(len(x)).view(-1, 1).float()

    out = captioning(Pipe(), torch.zeros(7, 3, 8, 8, dtype=torch.uint8), names, progress=False)
    # exact: all but image 2; rank of true name: image i beats every j > i, loses to j < i -> rank i (image 6: 5)
    assert out["caption_exact_match"] == round(6 / 7, 4)
    assert out["retrieval_top1"] == round(1 / 7, 4) and out["retrieval_top5"] == round(5 / 7, 4)


@pytest.mark.parametrize("positions", SCHEMES)
def test_kv_cache_changes_nothing_for_every_position_scheme(positions):
    torch.manual_seed(0)
    model = MultimodalAR(d_model=32, n_layers=2, n_heads=2, head_width=32, head_depth=1, max_text_bytes=16,
                         positions=positions).eval()
    cap = encode_text("red apple", 16)
    kw = dict(num_images=2, num_steps=4, head_steps=2, guidance_scale=2.0)
    a = model.generate(cap, generator=torch.Generator().manual_seed(3), **kw)
    b = model.generate(cap, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert model.caption(x, max_new_tokens=6) == model.caption(x, max_new_tokens=6, use_cache=False)
    # and the cached logits themselves: log p(caption | image) through the cache == teacher-forced
    caps = [encode_text(t, 16) for t in ("red apple", "dog", "flag: Japan")]
    torch.testing.assert_close(model.rank_captions(x[:1], caps), model.caption_logprob(x[:1].expand(3, -1, -1, -1),
                                                                                       caps), atol=1e-4, rtol=1e-4)
