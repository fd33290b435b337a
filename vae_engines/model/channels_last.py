"""The folded decoder as 2-D convolutions in channels-last memory: what compiled PyTorch
engines run.

Why: cuDNN's fast convolution kernels work on NHWC tensors. A Conv1d over an NCW tensor
makes cuDNN convert layouts around every convolution (nchwToNhwc + nhwcToNchw: 11.1 ms of a
35.6 ms compiled fp16 60 s decode on the lent H200, FIELD_NOTES 2026-11-29). The same
arithmetic as a Conv2d with a 1 x k kernel over [B, C, 1, T] stored channels-last keeps
every tensor NHWC from the first convolution to the last; Snake and the residual adds are
elementwise and do not care about layout.

`ChannelsLastDecoder` wraps a copy of the folded decoder (model.oobleck.fold_decoder) with
its convolutions and Snake constants reshaped to 2-D, so the module tree, the layer names
and the residual logic stay diffusers' own. It takes a float32 latent [B, C, T] and returns
float32 audio [B, audio_channels, T * hop], computing in `dtype` inside: the casts belong to
the engine, as a TensorRT plan with float32 I/O does them, so every engine kind has the same
call.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _conv2d(conv: nn.Conv1d) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                    padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
                    bias=conv.bias is not None)
    out.weight.data.copy_(conv.weight.data.unsqueeze(2))
    if conv.bias is not None:
        out.bias.data.copy_(conv.bias.data)
    return out


def _conv_transpose2d(conv: nn.ConvTranspose1d) -> nn.ConvTranspose2d:
    out = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]),
                             stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                             output_padding=(0, conv.output_padding[0]), groups=conv.groups,
                             bias=conv.bias is not None, dilation=(1, conv.dilation[0]))
    out.weight.data.copy_(conv.weight.data.unsqueeze(2))
    if conv.bias is not None:
        out.bias.data.copy_(conv.bias.data)
    return out


def _to_2d(parent: nn.Module) -> None:
    for name, child in parent.named_children():
        if type(child) is nn.Conv1d:
            setattr(parent, name, _conv2d(child))
        elif type(child) is nn.ConvTranspose1d:
            setattr(parent, name, _conv_transpose2d(child))
        else:
            for buffer in ("alpha", "inv_beta"):  # the folded Snake's [1, C, 1] constants
                value = getattr(child, buffer, None)
                if isinstance(value, torch.Tensor) and value.dim() == 3:
                    setattr(child, buffer, value.unsqueeze(2))
            _to_2d(child)


class ChannelsLastDecoder(nn.Module):
    """float32 latent [B, C, T] -> float32 audio [B, A, T * hop], computed in `dtype`, NHWC."""

    def __init__(self, folded_decoder: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not getattr(folded_decoder, "_vae_engines_folded", False):
            raise ValueError("ChannelsLastDecoder takes a decoder folded by model.oobleck.fold_decoder")
        body = copy.deepcopy(folded_decoder).float()
        _to_2d(body)
        self.body = body.to(dtype=dtype, memory_format=torch.channels_last).eval()
        self.dtype = dtype

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent.to(self.dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return self.body(x).squeeze(2).float().contiguous()
