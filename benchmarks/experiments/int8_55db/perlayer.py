import sys; sys.path.insert(0, "/work/main")  # run from the workspace after dvc repro (README)
import numpy as np, torch
exec(open("/work/main/benchmarks/experiments/int8_55db/common.py").read())
from vae_engines.quant.crossval import halves
fq = FakeQuant(ex, plan.layers)
t2 = plan_layer["conv2"].activation; t1 = plan_layer["conv1"].activation
def amax_of(mxd, base, extra):
    a = {t: float(mxd[t].max()) * base for t in tensors}
    for t, m in extra.items(): a[t] = float(mxd[t].max()) * m
    return a
M2 = (1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5)
parts = halves(cal); fits = [E.channel_maxima(ex, tensors, h) for h in parts]; refs = [ex.decode(h) for h in parts]
def cv(base, extra):
    return sum(float(np.sum((ex.decode(h2, **fq.plan_overrides(plan, amax_of(fit, base, extra))).astype(np.float64) - r2) ** 2))
               for fit, h2, r2 in zip(fits, parts[::-1], refs[::-1]))
for base in (1.1, 1.15):
    for tt, name in ((t2, "conv2"), (t1, "conv1")):
        rows = []
        for m in M2:
            held_db = round(peak_psnr(ref, ex.decode(held, **fq.plan_overrides(plan, amax_of(mx, base, {tt: m})))), 2)
            rows.append((m, round(cv(base, {tt: m}), 4), held_db))
        best = min(rows, key=lambda r: r[1])
        print(f"base x{base}, {name} input margin: (m, CV error, held-out dB)", rows, "-> CV picks", best, flush=True)
