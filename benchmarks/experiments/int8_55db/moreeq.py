import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
src = open(__file__.rsplit("/", 1)[0] + "/common.py").read().replace('read_latent_set("data/calibration")', 'np.load(CAL)')
for CAL in ("/tmp/p38/cal16/latents.npy", "/tmp/p38/cal32/latents.npy"):
    exec(src)
    print(CAL, cal.shape, flush=True)
    for mig in (None, 0.5, 1.0):
        print("  mig", mig, score(E.equalization_scales(groups, mx, model, mig), (1.0, 1.1, 1.2)), flush=True)
