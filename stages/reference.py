"""DVC stage `reference`: fp32 and fp16 decodes of the held-out data, computed once."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.measure.evaluate import reference_outputs
from vae_engines.measure.runtimes import OrtRuntime


def main(args):
    params = config.load(args.params)
    threads = params.evaluate.threads
    reference_outputs(OrtRuntime(args.fp32, threads), OrtRuntime(args.fp16, threads), args.holdout, args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--fp32", required=True)
    p.add_argument("--fp16", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--out", required=True)
    entry.run(main, p)
