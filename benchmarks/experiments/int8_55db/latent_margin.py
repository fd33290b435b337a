import sys; sys.path.insert(0, "/work/main")  # run from the workspace after dvc repro (README)
import numpy as np, torch, json
exec(open("/work/main/benchmarks/experiments/int8_55db/common.py").read())
from vae_engines.quant.crossval import halves
fq = FakeQuant(ex, plan.layers)
t1 = plan_layer["conv1"].activation
print("conv1 input tensor:", t1)
def amax_of(mxd, base, m1):
    a = {t: float(mxd[t].max()) * base for t in tensors}
    a[t1] = float(mxd[t1].max()) * m1
    return a
parts = halves(cal); fits = [E.channel_maxima(ex, tensors, h) for h in parts]; refs = [ex.decode(h) for h in parts]
def cv(base, m1):
    return sum(float(np.sum((ex.decode(h2, **fq.plan_overrides(plan, amax_of(fit, base, m1))).astype(np.float64) - r2) ** 2))
               for fit, h2, r2 in zip(fits, parts[::-1], refs[::-1]))
out = {}
for base in (1.0, 1.05, 1.1, 1.15, 1.2, 1.3):
    row = []
    for m1 in (1.0, 1.15, 1.3, 1.5, 2.0):
        e = cv(base, m1); h = peak_psnr(ref, ex.decode(held, **fq.plan_overrides(plan, amax_of(mx, base, m1))))
        out[f"{base} {m1}"] = (round(e, 4), round(h, 2)); row.append((m1, round(e, 4), round(h, 2)))
    print("base", base, row, flush=True)
best = min(out, key=lambda k: out[k][0]); print("joint CV picks", best, out[best])
json.dump(out, open("/tmp/p38c/grid.json", "w"))
