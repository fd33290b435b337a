"""DVC stage `corpus`: the built-in music-like audio, written as FLAC files (the default
calibration and held-out folder)."""

from vae_engines.core import entry, params
from vae_engines.data.corpus import corpus_stage


def main(args):
    corpus_stage(params.load(args.params), args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output folder")
    entry.run(main, p)
