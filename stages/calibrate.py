"""DVC stage `calibrate`: collect the calibration latents and their manifest."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.data.latents import collect_latents, write_latent_set
from vae_engines.model.oobleck import load_vae


def main(args):
    params = config.load(args.params)
    loaded = load_vae(params.model)
    frames = params.calibration.window(params.profile)
    latents, manifest = collect_latents(params.calibration, frames, loaded)
    write_latent_set(args.out, latents, manifest)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output directory")
    entry.run(main, p)
