"""Paper 002 (Huang & Yu) on NYU Depth v2: a trimmed VGG-19 FCN with a transposed-conv
decoder, searched over the ablations A1/A2/A3 of its Table 1 and its SGD settings.

    python studies/fcn_vgg_nyu.py --source NYU_FOLDER      # nyu_depth_v2_labeled.mat + splits.mat
    python studies/fcn_vgg_nyu.py                          # no NYU files: embedded synthetic-rooms
    python studies/fcn_vgg_nyu.py --budget smoke           # the whole path in ~2 min
    python studies/fcn_vgg_nyu.py --budget paper --pretrained vgg19-dcbb9e9d.pth   # a GPU

Every trial is also scored on the real indoor frames of real-samples (`real/` metrics).
"""

import sys

from depthlab.config import Budget
from depthlab.methods.fcn_vgg import PAPER_ROWS, search_space
from depthlab.study import NYU_PAIRED, SUPERVISED_SHOWN, StudySpec, study_main

CPU = dict(width=0.25, decoder_init="kaiming", batch_size=8)
BUDGETS = {
    "smoke": Budget("smoke", (64, 64), steps=6, eval_every=3, eval_samples=8, num_trials=4,
                    method_overrides=dict(CPU, width=0.125),
                    data_counts=dict(train=32, test=8), note="smoke: checks the path"),
    "default": Budget("default", (96, 128), steps=600, eval_every=150, eval_samples=128,
                      num_trials=8, method_overrides=CPU, data_counts=dict(train=795, test=128),
                      note="CPU: VGG width 1/4, random init, He-initialised decoder (the "
                           "paper's N(0, 1) decoder needs BN statistics a short run lacks), "
                           "batch 8, 600 SGD steps (~6 epochs of the paper's 1000)"),
    "paper": Budget("paper", (120, 160), steps=50_000, eval_every=2_500, eval_samples=654,
                    num_trials=12, note="160x120 in, 80x60 out, 1000 epochs of 795 at batch "
                                        "16; pass --pretrained with the ImageNet VGG-19"),
}

SPEC = StudySpec(
    name="fcn-vgg-nyu", method="fcn_vgg", **NYU_PAIRED,
    search_space=search_space, points_to_evaluate=PAPER_ROWS, budgets=BUDGETS,
    metric="best/rmse_m", mode="min",
    shown_metrics=SUPERVISED_SHOWN,
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(study_main(SPEC))
