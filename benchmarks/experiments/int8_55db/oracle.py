import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
mh = E.channel_maxima(ex, tensors, held)
both = {t: np.maximum(mx[t], mh[t]) for t in tensors}
def score2(stat_scales, stat_ranges, mig, m=1.0):
    scales = E.equalization_scales(groups, stat_scales, model, mig)
    g = E.equalized_graph(model, groups, scales); q = GraphExecutor(g, torch.device("cpu"))
    amax_ch = E.equalized_channel_amax(groups, scales, stat_ranges)
    fq = FakeQuant(q, plan.layers)
    return round(peak_psnr(ref, q.decode(held, **fq.plan_overrides(plan, {t: float(amax_ch[t].max()) * m for t in tensors}))), 2)
for mig in (None, 0.5, 1.0):
    print("mig", mig, "scales+ranges cal+held (oracle):", score2(both, both, mig), " scales cal, ranges cal+held:", score2(mx, both, mig), flush=True)
