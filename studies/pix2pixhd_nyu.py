"""Paper 000 (Chu et al.) on NYU Depth v2: pix2pixHD's global generator with a two-scale
discriminator (D1 full, D2 half resolution), LSGAN + feature matching, searched over
pix2pixHD's knobs (the paper varied none).

    python studies/pix2pixhd_nyu.py --source NYU_FOLDER    # nyu_depth_v2_labeled.mat + splits.mat
    python studies/pix2pixhd_nyu.py                        # no NYU files: embedded synthetic-rooms
    python studies/pix2pixhd_nyu.py --budget smoke         # the whole path in ~2 min
    python studies/pix2pixhd_nyu.py --budget paper --pretrained vgg19-dcbb9e9d.pth   # a GPU

Every trial is also scored on the real indoor frames of real-samples (`real/` metrics).
"""

import sys

from depthlab.config import Budget
from depthlab.methods.pix2pixhd import CPU_ROWS, PAPER_ROWS, search_space, search_space_cpu
from depthlab.study import NYU_PAIRED, SUPERVISED_SHOWN, StudySpec, study_main

CPU = dict(ngf=8, ndf=8, n_downsample=3, n_blocks=2, batch_size=4)
SMALL = dict(search_space=search_space_cpu, points_to_evaluate=CPU_ROWS)
BUDGETS = {
    "smoke": Budget("smoke", (64, 64), steps=6, eval_every=3, eval_samples=8, num_trials=4,
                    method_overrides=dict(CPU, ngf=4, ndf=4, n_blocks=1),
                    data_counts=dict(train=32, test=8), note="smoke: checks the path", **SMALL),
    "default": Budget("default", (96, 128), steps=600, eval_every=150, eval_samples=128,
                      num_trials=8, method_overrides=CPU, data_counts=dict(train=795, test=128),
                      note="CPU: ngf = ndf = 8, 3 downsamplings, 2 residual blocks, batch 4 "
                           "(pix2pixHD: 64, 4, 9, batch 1), 600 steps (~3 of 200 epochs); the "
                           "searched widths and block counts are scaled down with them",
                      **SMALL),
    "paper": Budget("paper", (240, 320), steps=159_000, eval_every=7_950, eval_samples=654,
                    num_trials=8, note="320x240, 100 + 100 epochs of 795 at batch 1 "
                                       "(pix2pixHD's schedule); --pretrained turns on the "
                                       "VGG-19 loss"),
}

SPEC = StudySpec(
    name="pix2pixhd-nyu", method="pix2pixhd", **NYU_PAIRED,
    search_space=search_space, points_to_evaluate=PAPER_ROWS, budgets=BUDGETS,
    metric="best/rmse_m", mode="min",
    shown_metrics=SUPERVISED_SHOWN,
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(study_main(SPEC))
