"""DVC stage `calibrate`: calibration latents from calibration.path, with their manifest."""

from vae_engines.core import device, entry, params
from vae_engines.data.sets import make_set
from vae_engines.data.sources import OtherSet


def main(args):
    p = params.load(args.params)
    held_out = OtherSet(p.holdout.path, p.holdout.source, p.holdout.fraction)
    make_set("calibration", p.calibration, held_out, frames=p.calibration.frames or p.profile.opt_frames,
             model=p.model, device=device.resolve(p.compute), out_dir=args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output folder (latent set)")
    entry.run(main, p)
