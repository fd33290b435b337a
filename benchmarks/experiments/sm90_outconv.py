"""kernels.triton_outconv compiled for sm_90 without a GPU: registers, spills (LOCAL), shared
memory and barriers of each tile, fp16 and int8 (issue 36, item 3; before device time).

    python benchmarks/experiments/sm90_outconv.py > benchmarks/results/outconv/sm90_resources.txt
"""
import re, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vae_engines.kernels.triton_outconv import output_conv_kernel
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
for quant in (False, True):
    for bm, bk, warps, stages in ((128, 128, 4, 2), (256, 128, 8, 2), (256, 64, 4, 3), (128, 64, 4, 3)):
        t = "i8" if quant else "fp16"
        sig = {"x_desc": f"tensordesc<{t}[1, {bm}, {bk}]>", "w_ptr": f"*{t}", "w_scale_ptr": "*fp32", "bias_ptr": "*fp32",
               "out_ptr": "*fp32", "scratch_ptr": "*fp32", "M": "i32", "x_scale": "fp32"}
        const = dict(C=128, N=2, TAPS=7, PAD=3, QUANT=quant, HAS_BIAS=True, BM=bm, BK=bk, NPAD=16)
        try:
            c = triton.compile(ASTSource(output_conv_kernel, {**sig, **{k: "constexpr" for k in const}}, const),
                               target=GPUTarget("cuda", 90, 128), options={"num_warps": warps, "num_stages": stages})
        except Exception as e:
            print(quant, bm, bk, warps, stages, "ERR", str(e).splitlines()[0][:200]); continue
        p = Path("/tmp/oc.cubin"); p.write_bytes(c.asm["cubin"])
        u = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(p)], capture_output=True, text=True).stdout
        f = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", u))
        print("int8" if quant else "fp16", bm, bk, warps, stages, "REG", f["REG"], "LOCAL", f["LOCAL"], "shared", c.metadata.shared,
              "wgmma", "wgmma" in c.asm["ptx"], "bar.sync", c.asm["ptx"].count("bar.sync"), flush=True)
