import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
CAL = sys.argv[1]
src = open(__file__.rsplit("/", 1)[0] + "/common.py").read().replace('read_latent_set("data/calibration")', 'np.load(CAL)')
exec(src)
from vae_engines.quant.crossval import halves
from vae_engines.quant.margin import MARGINS
print(cal.shape)
parts = halves(cal)
fitted = [E.channel_maxima(ex, tensors, h) for h in parts]
refs = [ex.decode(h) for h in parts]
err = {}
for mig in (None, 0.25, 0.5, 0.75, 1.0):
    graphs = []
    for fit in fitted:
        sc = E.equalization_scales(groups, fit, model, mig)
        q = GraphExecutor(E.equalized_graph(model, groups, sc), torch.device("cpu"))
        graphs.append((q, FakeQuant(q, plan.layers), E.equalized_channel_amax(groups, sc, fit)))
    for m in MARGINS:
        tot = 0.0
        for (q, fq, ach), held_, r in zip(graphs, parts[::-1], refs[::-1]):
            o = q.decode(held_, **fq.plan_overrides(plan, {t: float(ach[t].max()) * m for t in tensors}))
            tot += float(np.sum((o.astype(np.float64) - r) ** 2))
        err[(mig, m)] = tot
    print(mig, {m: round(err[(mig, m)], 4) for m in MARGINS}, flush=True)
best = min(err, key=err.get)
print("joint CV choice", best)
sc = E.equalization_scales(groups, mx, model, best[0])
print("held-out at the choice", score(sc, (best[1],)))
