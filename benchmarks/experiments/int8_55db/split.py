import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.margin import widened
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers
from vae_engines.quant.stats import read_stats
torch.set_num_threads(2)
model = load_onnx("engines/onnx/fp32.onnx")
layers = quantizable_layers(model)
plan, tensors = conv_inputs_plan(layers), [l.activation for l in layers]
ex = GraphExecutor(model, torch.device("cpu")); fake = FakeQuant(ex, layers)
held = read_latent_set("data/holdout"); ref = ex.decode(held)
print([l.name for l in layers][:3], [l.name for l in layers][-3:], len(layers))
for m in (1.0, 1.15):
    amax = widened(calibrate(read_stats("data/stats/stats.npz"), tensors, "minmax"), m)
    def score(drop_w=(), drop_a=()):
        ov = fake.plan_overrides(plan, amax)
        for l in plan.layers:
            if l.name in drop_w: ov["weights"].pop(l.node)
            if l.name in drop_a: ov["input_hooks"].pop((l.node, 0))
        return round(peak_psnr(ref, ex.decode(held, **ov)), 2)
    print("margin", m, "all", score())
    for name in ("conv1", "conv2"):
        print(" ", name, "weights float", score(drop_w=(name,)), "act float", score(drop_a=(name,)), "both float", score(drop_w=(name,), drop_a=(name,)))
    print("  conv1+conv2 float", score(drop_w=("conv1","conv2"), drop_a=("conv1","conv2")))
    print("  all weights float", score(drop_w=[l.name for l in layers]), "all acts float", score(drop_a=[l.name for l in layers]))
