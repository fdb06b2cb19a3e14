"""A compact UNet epsilon-predictor for 64x64 mask-conditioned DDPM (Ho et al. 2020, sec. 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    image_size: int = 64  # the published design's resolution
    in_channels: int = 7  # x_t (3), masked image (3), mask (1)
    out_channels: int = 3  # epsilon
    base_channels: int = 32  # width at full resolution; cheap at 64x64 where FLOPs are dearest
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)  # widths at 64, 32, 16, 8: 4.9M params, 20 MB fp32
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)  # attention only where it is cheap and global context pays
    num_classes: int = 8  # PBC classes; index num_classes is "no label"
    dropout: float = 0.0
    groups: int = 8  # GroupNorm groups
    mid_attn: bool = True  # attention at the lowest resolution; the texture stage (texture.py) runs without, on crops of any size

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        self.attn_resolutions = tuple(self.attn_resolutions)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017), as used by DDPM. t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, 2 * cout)  # scale and shift (FiLM), as in improved DDPM
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int, groups: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (B, heads, HW, C/heads) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        temb = ch * 4
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, temb)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        widths = [ch * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.image_size
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                attn = Attention(w, cfg.groups) if res in cfg.attn_resolutions else nn.Identity()
                self.down.append(nn.ModuleList([ResBlock(cur, w, temb, cfg.groups, cfg.dropout), attn]))
                cur = w
                skips.append(cur)
            if i < len(widths) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2

        self.mid1 = ResBlock(cur, cur, temb, cfg.groups, cfg.dropout)
        self.mid_attn = Attention(cur, cfg.groups) if cfg.mid_attn else nn.Identity()
        self.mid2 = ResBlock(cur, cur, temb, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                attn = Attention(w, cfg.groups) if res in cfg.attn_resolutions else nn.Identity()
                self.up.append(nn.ModuleList([ResBlock(cur + skips.pop(), w, temb, cfg.groups, cfg.dropout), attn]))
                cur = w
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)))
                res *= 2

        self.norm_out = nn.GroupNorm(cfg.groups, cur)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 7, H, W) = x_t, masked image, mask; t: (B,) int; labels: (B,) int or None."""
        if labels is None:
            labels = torch.full((x.shape[0],), self.cfg.num_classes, device=x.device, dtype=torch.long)
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels)) + self.label_emb(labels)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
