from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.execute import GraphExecutor, fake_quantize
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import conv_inputs_plan, quantizable_layers, activation_scale
from vae_engines.quant import equalize as E
torch.set_num_threads(2)
model = load_onnx("engines/onnx/fp32.onnx")
layers = quantizable_layers(model)
plan = conv_inputs_plan(layers); tensors = plan.tensors(); plan_layer = {l.name: l for l in plan.layers}
ex = GraphExecutor(model, torch.device("cpu"))
cal = read_latent_set("data/calibration"); held = read_latent_set("data/holdout"); ref = ex.decode(held)
groups = E.scale_groups(model)
wanted = set(tensors)
mx = E.channel_maxima(ex, tensors, cal)
def score(scales, margins):
    g = E.equalized_graph(model, groups, scales); q = GraphExecutor(g, torch.device("cpu"))
    amax_ch = E.equalized_channel_amax(groups, scales, mx)
    fq = FakeQuant(q, plan.layers)
    return [round(peak_psnr(ref, q.decode(held, **fq.plan_overrides(plan, {t: float(amax_ch[t].max()) * m for t in tensors}))), 2) for m in margins]
def conv2_only_scores(s, margins):
    fq = FakeQuant(ex, plan.layers); l = plan_layer["conv2"]; out = []
    for m in margins:
        ov = fq.plan_overrides(plan, {t: float(mx[t].max()) * m for t in tensors})
        step = torch.tensor(float(activation_scale(float(np.max(mx[l.activation] / s)) * m)))
        st = torch.from_numpy(s.astype(np.float32)).reshape(1, -1, 1)
        ov["input_hooks"][(l.node, 0)] = lambda x: (fake_quantize(x / st, step) * st).to(x.dtype)
        out.append(round(peak_psnr(ref, ex.decode(held, **ov)), 2))
    return out
