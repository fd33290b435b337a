"""DVC stage `holdout`: held-out latents (disjoint from calibration) and audio clips with
their encodings for the wav round-trip."""

from vae_engines.core import device, entry, params
from vae_engines.data.sets import make_set
from vae_engines.data.sources import OtherSet


def main(args):
    p = params.load(args.params)
    calibration = OtherSet(p.calibration.path, p.calibration.source, p.holdout.fraction)
    make_set("holdout", p.holdout, calibration, frames=p.holdout.frames or p.profile.opt_frames, model=p.model,
             device=device.resolve(p.compute), out_dir=args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output folder (latent set)")
    entry.run(main, p)
