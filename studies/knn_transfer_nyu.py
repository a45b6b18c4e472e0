"""Paper 003 (Shoukat et al.) on NYU Depth v2: depth transfer by ResNet-50 tile features.

No network is trained: the training images are indexed by ResNet-50 features of their
4 × 4 tiles; a query's depth is fused from its nearest neighbours' maps and refined by a
cross bilateral filter guided by the query.

    python studies/knn_transfer_nyu.py --source NYU_FOLDER   # nyu_depth_v2_labeled.mat, splits.mat
    python studies/knn_transfer_nyu.py                       # no NYU files: synthetic-rooms
    python studies/knn_transfer_nyu.py --budget smoke        # the whole path in ~2 min
    python studies/knn_transfer_nyu.py --budget paper --pretrained resnet50-0676ba61.pth   # a GPU

A trial indexes the training split once (cached per feature config inside the prepared
dataset, so trials varying only k, threshold, weighting or the filter reuse it), takes one
no-op step and is scored at steps 0 and 1 (the same numbers). NYU's protocol: Eigen crop,
10 m cap. Every trial is also scored on the real indoor frames of real-samples (`real/`).
"""

import sys

from depthlab.config import Budget
from depthlab.methods.knn_transfer import PAPER_ROWS, search_space
from depthlab.study import NYU_PAIRED, StudySpec, study_main

ONE_STEP = dict(steps=1, eval_every=1)  # fit_data indexes; the one step is a no-op
BUDGETS = {
    "smoke": Budget("smoke", (64, 64), eval_samples=8, num_trials=4, **ONE_STEP,
                    method_overrides=dict(width=0.125, tile_size=16),
                    data_counts=dict(train=32, test=8), note="smoke: checks the path"),
    "default": Budget("default", (96, 128), eval_samples=128, num_trials=8, **ONE_STEP,
                      method_overrides=dict(tile_size=32), data_counts=dict(train=795, test=128),
                      note="CPU: full-width ResNet-50, random init unless --pretrained "
                           "(random features are a weak stand-in for ImageNet ones), tiles "
                           "resized to 32 px (paper: unstated, 224 px assumed), 795 indexed "
                           "rooms or NYU frames, 128 test images"),
    "paper": Budget("paper", (480, 640), eval_samples=654, num_trials=16, **ONE_STEP,
                    note="NYU's 640x480, 795 indexed / 654 test, 224 px tiles; pass --pretrained "
                         "with torchvision's ImageNet ResNet-50"),
}

SPEC = StudySpec(
    name="knn-transfer-nyu", method="knn_transfer", **NYU_PAIRED,
    search_space=search_space, points_to_evaluate=PAPER_ROWS, budgets=BUDGETS,
    # RMSE heads the paper's NYU table (which has no C) and the other NYU studies' boards.
    metric="best/rmse_m", mode="min",
    shown_metrics=("best/rmse_m", "best/rmse_log10", "best/abs_rel", "best/log10",
                   "eval/real/rmse_m", "eval/real/abs_rel", "eval/real/corr"),
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(study_main(SPEC))
