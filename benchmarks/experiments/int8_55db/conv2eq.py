import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.execute import GraphExecutor, fake_quantize
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.margin import widened
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers, activation_scale
from vae_engines.quant.stats import read_stats
torch.set_num_threads(2)
model = load_onnx("engines/onnx/fp32.onnx")
layers = quantizable_layers(model)
plan, tensors = conv_inputs_plan(layers), [l.activation for l in layers]
ex = GraphExecutor(model, torch.device("cpu")); fake = FakeQuant(ex, layers)
held = read_latent_set("data/holdout"); ref = ex.decode(held)
stats = read_stats("data/stats/stats.npz"); ch = stats.channels()
base = calibrate(stats, tensors, "minmax")
amax = widened(base, 1.15)
names = {l.name: l for l in layers}
def run(eq):  # eq: layer name -> (s per channel, margin)
    ov = fake.plan_overrides(plan, amax)
    for name, (s, m) in eq.items():
        l = names[name]
        a = ch[l.activation]
        rng = float(np.max(a / s)) * m
        step = torch.tensor(float(activation_scale(rng)))
        st = torch.from_numpy(s.astype(np.float32)).reshape(1, -1, 1)
        ov["input_hooks"][(l.node, 0)] = lambda x, st=st, step=step: (fake_quantize(x / st, step) * st).to(x.dtype)
    return round(peak_psnr(ref, ex.decode(held, **ov)), 2)
print("base x1.15", run({}))
for name in ("conv2", "conv1"):
    a = ch[names[name].activation]
    print(name, "channel max spread", a.max()/np.median(a), a.max()/a.min())
    for mig in (0.25, 0.5, 0.75, 1.0):
        s = (a / a.max()) ** mig
        print(name, "mig", mig, [run({name: (s, m)}) for m in (1.0, 1.15, 1.3, 1.5)], flush=True)
