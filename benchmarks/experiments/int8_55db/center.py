import sys; sys.path.insert(0, "/work/main")  # run from the workspace after dvc repro (README)
import numpy as np, torch
exec(open("/work/main/benchmarks/experiments/int8_55db/common.py").read())
from vae_engines.quant.crossval import halves
def channel_minmax(executor, names, latents):
    want, lo, hi = set(names), {}, {}
    def observe(name, x):
        if name in want:
            dims = [d for d in range(x.dim()) if d != 1]
            a = x.detach().amin(dim=dims).double().numpy(); b = x.detach().amax(dim=dims).double().numpy()
            lo[name] = np.minimum(lo[name], a) if name in lo else a
            hi[name] = np.maximum(hi[name], b) if name in hi else b
    for i in range(len(latents)):
        executor.run(latents[i:i + 1], observe=observe)
    return lo, hi
lo, hi = channel_minmax(ex, tensors, cal)
print("tensor  amax  centered-amax  ratio")
for t in tensors:
    a = max(np.abs(lo[t]).max(), np.abs(hi[t]).max()); h = ((hi[t] - lo[t]) / 2).max()
    if a / h > 1.15: print(f"{t[:60]:60s} {a:8.3f} {h:8.3f} {a/h:5.2f}")
fq = FakeQuant(ex, plan.layers)
def run(lo, hi, m, latents, centre=True, only=None):
    ov = fq.plan_overrides(plan, {t: max(np.abs(lo[t]).max(), np.abs(hi[t]).max()) * m for t in tensors})
    for l in plan.layers:
        t = l.activation
        if not centre or (only and l.name not in only): continue
        o = torch.from_numpy(((hi[t] + lo[t]) / 2).astype(np.float32)).reshape(1, -1, 1)
        step = torch.tensor(float(activation_scale(float(((hi[t] - lo[t]) / 2).max()) * m)))
        ov["input_hooks"][(l.node, 0)] = (lambda o, step: lambda x: (fake_quantize(x - o, step) + o).to(x.dtype))(o, step)
    return ex.decode(latents, **ov)
M = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3)
for centre in (False, True):
    print("centre" if centre else "plain", [round(peak_psnr(ref, run(lo, hi, m, held, centre)), 2) for m in M], flush=True)
print("centre conv2 only", [round(peak_psnr(ref, run(lo, hi, m, held, True, {"conv2"})), 2) for m in M], flush=True)
# margin by 2-fold CV on the calibration windows
parts = halves(cal); fits = [channel_minmax(ex, tensors, h) for h in parts]; refs = [ex.decode(h) for h in parts]
for centre in (False, True):
    err = {m: sum(float(np.sum((run(*fit, m, h2, centre).astype(np.float64) - r2) ** 2)) for fit, h2, r2 in zip(fits, parts[::-1], refs[::-1])) for m in M}
    best = min(err, key=err.get)
    print("CV", "centre" if centre else "plain", {m: round(e, 4) for m, e in err.items()}, "->", best,
          round(peak_psnr(ref, run(lo, hi, best, held, centre)), 2), flush=True)
