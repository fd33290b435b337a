import sys; sys.path.insert(0, "/work/main")
import numpy as np, torch
exec(open(__file__.rsplit("/", 1)[0] + "/common.py").read())
g = [x for x in groups if plan_layer["conv2"].activation in x.tensors]
print("group", g[0].name, len(g[0].tensors), [t for t in g[0].tensors if t in wanted])
last = g[0]
a2 = mx[plan_layer["conv2"].activation]
for mig in (0.5, 0.75, 1.0):
    s = (a2 / a2.max()) ** mig
    s = s / np.max((a2 / s) / a2.max())  # keep conv2's largest equalized range
    print("last-group, conv2 maxima, mig", mig, score({last.name: s}, (1.0, 1.15, 1.3)), flush=True)
    only = conv2_only_scores(s, (1.0, 1.15, 1.3))
    print("   same s as a Mul before conv2 only:", only, flush=True)
