"""DVC stage `calibrate`: calibration latents from calibration.path, with their manifest."""

from vae_engines.core import entry, params
from vae_engines.data.sets import make_set


def main(args):
    make_set("calibration", params.load(args.params), args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output folder (latent set)")
    entry.run(main, p)
