"""The denoising network: MONAI's DiffusionModelUNet with conditioning by channel concatenation,
by cross-attention on a covariate vector, or both.

For classifier-free guidance the model owns a learned *null* context used whenever
``cond.context`` is None (and for the rows a training step drops).
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import Tensor, nn

from brainsynth.diffusion.base import Cond
from brainsynth.nn.presets import UNET_PRESETS, preset


class UNetDenoiser(nn.Module):
    """``forward(x_t (B,C,*S), t (B,), cond) -> (B, out_channels, *S)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        concat_channels: int = 0,
        context_dim: int | None = None,
        preset_name: str = "tiny",
        grad_checkpointing: bool = False,
        **overrides,
    ):
        super().__init__()
        cfg = preset(UNET_PRESETS, preset_name, **overrides)
        self.concat_channels = concat_channels
        self.context_dim = context_dim
        self.net = DiffusionModelUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels + concat_channels,
            out_channels=out_channels,
            with_conditioning=context_dim is not None,
            cross_attention_dim=context_dim,
            use_flash_attention=True,
            **cfg,
        )
        if context_dim is not None:
            self.null_context = nn.Parameter(torch.zeros(1, 1, context_dim))
        self.grad_checkpointing = grad_checkpointing

    def context_tokens(self, context: Tensor | None, batch: int) -> Tensor | None:
        """(B, K) covariates -> (B, 1, K) tokens. None, or a row of NaN (a dropped condition, as
        condition dropout and guidance mark them), -> the learned null token."""
        if self.context_dim is None:
            return None
        null = self.null_context.expand(batch, 1, -1)
        if context is None:
            return null
        tokens = context.reshape(batch, 1, self.context_dim).to(self.null_context.dtype)
        dropped = torch.isnan(tokens).any(dim=-1, keepdim=True)
        return torch.where(dropped, null, torch.nan_to_num(tokens))

    def forward(self, x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        cond = cond or Cond()
        x = x_t
        if self.concat_channels:
            if cond.concat is None:
                raise ValueError(f"model expects {self.concat_channels} concat channels, got none")
            x = torch.cat([x_t, torch.nan_to_num(cond.concat.to(x_t.dtype))], dim=1)
        ctx = self.context_tokens(cond.context, x_t.shape[0])
        if self.grad_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(self.net, x, t, ctx, use_reentrant=False)
        return self.net(x, t, context=ctx)


def build_unet(
    preset_name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    concat_channels: int = 0,
    context_dim: int | None = None,
    grad_checkpointing: bool = False,
    **overrides,
) -> UNetDenoiser:
    return UNetDenoiser(
        spatial_dims,
        in_channels,
        out_channels,
        concat_channels=concat_channels,
        context_dim=context_dim,
        preset_name=preset_name,
        grad_checkpointing=grad_checkpointing,
        **overrides,
    )
