"""DVC stage `corpus`: the built-in music-like audio, written as FLAC files (the default
calibration and held-out folder)."""

from vae_engines.core import entry, params
from vae_engines.data.corpus import write_corpus


def main(args):
    c = params.load(args.params).corpus
    write_corpus(args.out, clips=c.clips, seconds=c.seconds, sr=c.sampling_rate, seed=c.seed)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output folder")
    entry.run(main, p)
