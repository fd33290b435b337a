"""DVC stage `env`: write the environment fingerprint that builds depend on."""

from vae_engines.core import entry
from vae_engines.core.env import fingerprint
from vae_engines.core.fileio import write_json


def main(args):
    write_json(args.out, fingerprint())


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True)
    entry.run(main, p)
