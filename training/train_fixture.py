"""Train the small default model: ACE-Step 1.5's VAE structure at reduced width, on the
built-in music-like corpus. Runs on a CUDA GPU (bf16 autocast); a few steps on the CPU
work too, for checking.

    python training/train_fixture.py --minutes 9 --out fixture/

The architecture is `acestep-1.5-small` (strides [2,4,4,6,10], 48 kHz, Snake, weight
norm, 64 latent channels, channel_multiples [1,1,2,2,4], decoder_channels 64). Loss:
multi-resolution STFT (log-magnitude L1 + spectral convergence) + L1 waveform + a small KL
term. Writes fp16 safetensors shards (each under 16 MB), config.json, train_log.json with
the loss curve and held-out round-trip quality next to the same architecture with random
weights, and loss.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from vae_engines.data.corpus import music_clips
from vae_engines import metrics
from vae_engines.model.oobleck import FIXTURE_DIR, build_vae, read_config

# the small architecture the fixture has: ACE-Step 1.5's VAE at reduced width
ACESTEP_15_SMALL = read_config(FIXTURE_DIR / "config.json")

SR = 48000
STFT_SIZES = (256, 512, 1024, 2048)
HELDOUT_SEED = 10_000  # training batches use seeds below this


class Batches(torch.utils.data.IterableDataset):
    """Endless batches of generated clips; worker w makes steps w, w + n, ... (seeded)."""

    def __init__(self, batch: int, seconds: float, seed: int) -> None:
        self.batch, self.seconds, self.seed = batch, seconds, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        step = worker
        while True:
            yield torch.from_numpy(music_clips(self.batch, self.seconds, SR, seed=self.seed * 1_000_003 + step))
            step += workers


def stft_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    total = x.new_zeros(())
    x, y = x.float().reshape(-1, x.shape[-1]), y.float().reshape(-1, y.shape[-1])
    for n in STFT_SIZES:
        win = torch.hann_window(n, device=x.device)
        X = torch.stft(x, n, n // 4, window=win, return_complex=True).abs()
        Y = torch.stft(y, n, n // 4, window=win, return_complex=True).abs()
        convergence = torch.linalg.norm(Y - X) / torch.linalg.norm(Y).clamp_min(1e-7)
        log_mag = (torch.log(X.clamp_min(1e-5)) - torch.log(Y.clamp_min(1e-5))).abs().mean()
        total = total + convergence + log_mag
    return total


def roundtrip_quality(vae, clips: np.ndarray, device: str) -> dict:
    """Mean metrics of decode(encode(clip)).mean over held-out clips."""
    rows = []
    with torch.no_grad():
        for clip in clips:
            x = torch.from_numpy(clip[None]).to(device)
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.float().cpu().numpy()[..., : clip.shape[-1]]
            rows.append({"mr_stft": metrics.mr_stft(clip[None], y)["mr_stft"],
                         "peak_psnr_db": metrics.peak_psnr(clip[None], y), "si_sdr_db": metrics.si_sdr(clip[None], y)})
    return {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}


def save_fp16_shards(vae, out: Path, max_bytes: int = 15 << 20) -> list[str]:
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in vae.state_dict().items()}
    shards, current, size = [], {}, 0
    for key in sorted(state):
        nbytes = state[key].numel() * 2
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = state[key]
        size += nbytes
    shards.append(current)
    names = []
    for i, shard in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name))
        names.append(name)
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=9.0, help="training wall-time budget")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kl", type=float, default=1e-4)
    p.add_argument("--l1", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--heldout", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", type=Path, default=None, help="a previous --out folder to continue from")
    args = p.parse_args()

    hop = math.prod(ACESTEP_15_SMALL["downsampling_ratios"])
    args.seconds = max(1, round(args.seconds * SR / hop)) * hop / SR  # whole latent frames
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    heldout = music_clips(args.heldout, args.seconds, SR, seed=HELDOUT_SEED)
    vae = build_vae(ACESTEP_15_SMALL, seed=args.seed).to(device)
    random_quality = roundtrip_quality(vae.eval(), heldout, device)
    print("random weights:", random_quality, flush=True)
    previous = {"steps": 0, "train_seconds": 0.0, "log": [], "runs": []}
    if args.resume:
        from safetensors.torch import load_file

        state = {}
        for shard in sorted(args.resume.glob("*.safetensors")):
            state.update(load_file(str(shard)))
        vae.load_state_dict({k: v.float() for k, v in state.items()})
        previous = json.loads((args.resume / "train_log.json").read_text())
        print(f"resumed at step {previous['steps']}:", roundtrip_quality(vae.eval(), heldout, device), flush=True)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.8, 0.99))
    loader = torch.utils.data.DataLoader(Batches(args.batch, args.seconds, args.seed), batch_size=None,
                                         num_workers=args.workers, prefetch_factor=4, persistent_workers=True)
    log, start, step = list(previous["log"]), time.time(), previous["steps"]
    seconds0 = previous["train_seconds"]
    budget = args.minutes * 60
    ema = None
    for batch in loader:
        x = batch.to(device, non_blocking=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            posterior = vae.encode(x).latent_dist
            y = vae.decode(posterior.sample()).sample[..., : x.shape[-1]]
        spec = stft_loss(y, x)
        wave = (y.float() - x).abs().mean()
        kl = posterior.kl().mean()
        loss = spec + args.l1 * wave + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        spec_value = float(spec.detach())
        ema = spec_value if ema is None else 0.98 * ema + 0.02 * spec_value
        if step % 25 == 0 or step == 1:
            elapsed = time.time() - start
            log.append({"step": step, "seconds": round(seconds0 + elapsed, 1), "stft": round(float(spec), 4),
                        "stft_ema": round(ema, 4), "l1": round(float(wave), 5), "kl": round(float(kl), 3)})
            print(json.dumps(log[-1]), flush=True)
        if time.time() - start > budget or (args.max_steps and step - previous["steps"] >= args.max_steps):
            break
    train_seconds = seconds0 + time.time() - start
    vae.eval()
    trained_quality = roundtrip_quality(vae, heldout, device)
    print("trained:", trained_quality, flush=True)
    vae = vae.float().cpu()
    shards = save_fp16_shards(vae, args.out)
    config = {"_class_name": "AutoencoderOobleck", **{k: v for k, v in ACESTEP_15_SMALL.items()}}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    summary = {
        "architecture": "acestep-1.5-small", "config": ACESTEP_15_SMALL,
        "parameters": {"encoder": sum(p.numel() for p in vae.encoder.parameters()),
                       "decoder": sum(p.numel() for p in vae.decoder.parameters())},
        "data": {"corpus": "vae_engines.data.corpus.music_clips", "clip_seconds": args.seconds, "batch": args.batch,
                 "train_seeds": f"seed*1000003 + step, seed {args.seed}", "heldout_seed": HELDOUT_SEED,
                 "heldout_clips": args.heldout},
        "loss": {"stft_sizes": list(STFT_SIZES), "l1": args.l1, "kl": args.kl},
        "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.8, 0.99], "grad_clip": 1.0},
        "steps": step, "train_seconds": round(train_seconds, 1),
        "runs": previous.get("runs", []) + [{"steps": step - previous["steps"], "seconds": round(time.time() - start, 1),
                                             "resumed_from_step": previous["steps"], "optimizer": "fresh AdamW"}],
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "heldout_roundtrip": {"random_weights": random_quality, "trained": trained_quality},
        "shards": shards, "log": log,
    }
    (args.out / "train_log.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([r["step"] for r in log], [r["stft"] for r in log], alpha=0.35, label="multi-res STFT loss")
        ax.plot([r["step"] for r in log], [r["stft_ema"] for r in log], label="EMA")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out / "loss.png", dpi=100)
    except ImportError:
        print("matplotlib missing: no loss.png", flush=True)


if __name__ == "__main__":
    main()
