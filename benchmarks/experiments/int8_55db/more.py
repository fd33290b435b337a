import sys, dataclasses; sys.path.insert(0, "/work/main")
import numpy as np, torch
from vae_engines.core import params, device
from vae_engines.data.sets import make_set
from vae_engines.data.sources import OtherSet
p = params.load("params.yaml")
held_out = OtherSet(p.holdout.path, p.holdout.source, p.holdout.fraction)
for n in (16, 32):
    c = dataclasses.replace(p.calibration, count=n)
    try:
        make_set("calibration", c, held_out, frames=32, model=p.model, device=device.resolve(p.compute), out_dir=f"/tmp/p38/cal{n}")
        print(n, np.load(f"/tmp/p38/cal{n}/latents.npy").shape)
    except Exception as e:
        print(n, "fail", e)
