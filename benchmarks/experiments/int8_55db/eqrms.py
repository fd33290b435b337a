import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers
from vae_engines.quant import equalize as E
torch.set_num_threads(2)
model = load_onnx("engines/onnx/fp32.onnx")
layers = quantizable_layers(model)
plan = conv_inputs_plan(layers); tensors = plan.tensors()
ex = GraphExecutor(model, torch.device("cpu"))
cal = read_latent_set("data/calibration"); held = read_latent_set("data/holdout"); ref = ex.decode(held)
groups = E.scale_groups(model)
wanted = set(tensors); mx, ss, n = {}, {}, {}
def observe(name, x):
    if name in wanted:
        d = [i for i in range(x.dim()) if i != 1]
        m = x.detach().abs().amax(dim=d).double().numpy(); q = (x.detach().double() ** 2).sum(dim=d).numpy()
        mx[name] = np.maximum(mx[name], m) if name in mx else m
        ss[name] = ss.get(name, 0) + q; n[name] = n.get(name, 0) + x.numel() // x.shape[1]
for i in range(len(cal)):
    ex.run(cal[i:i+1], observe=observe)
rms = {t: np.sqrt(ss[t] / n[t]) for t in tensors}
# crest-scaled rms: rms * median(max/rms) of the tensor, so same units as a max
crest = {t: rms[t] * np.median(mx[t] / rms[t]) for t in tensors}
def score(stat, mig, margins):
    scales = E.equalization_scales(groups, stat, model, mig)
    g = E.equalized_graph(model, groups, scales); q = GraphExecutor(g, torch.device("cpu"))
    amax_ch = E.equalized_channel_amax(groups, scales, mx)  # ranges from the true calibration maxima
    fq = FakeQuant(q, plan.layers)
    out = []
    for m in margins:
        amax = {t: float(amax_ch[t].max()) * m for t in tensors}
        out.append(round(peak_psnr(ref, q.decode(held, **fq.plan_overrides(plan, amax))), 2))
    return out
M = (1.0, 1.1, 1.15, 1.3)
print("none", score(mx, None, M), flush=True)
for mig in (0.25, 0.5, 0.75, 1.0):
    print("max mig", mig, score(mx, mig, M), flush=True)
    print("rms mig", mig, score(crest, mig, M), flush=True)
