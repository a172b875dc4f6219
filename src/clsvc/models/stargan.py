"""StarGAN-VC2 (Kaneko, Kameoka, Tanaka & Hojo, Interspeech 2019) on clsvc's 80-bin mels.

The original converts normalised MCEPs (35 x 128 frames, WORLD vocoder); here the same
networks and losses run on the toolkit's [0, 1] mel features (80 x T).

Generator G(x, c) -- a "2-1-2D" CNN over the mel as a one-channel image (freq x time):

* 2-D part: Conv2d (5, 15) + GLU, then two stride-2 Conv2d 5x5 + instance norm (IN) + GLU
  blocks: (80, T) -> (20, T/4). Every GLU halves the conv's channels; ``gen_channels`` (g) is
  the width of the first conv *before* its GLU, as the paper's figure labels widths
  (paper g = 128: convs of 128, 256, 512 channels).
* reshape (2g channels x 20 bins) to 1-D, 1x1 conv to ``res_channels`` + IN;
  ``res_blocks`` residual blocks, each Conv1d k5 to 2 x res_channels -> conditional instance
  norm (CIN) -> GLU, added to its input. CIN normalises each channel over time and applies a
  per-speaker scale and shift (gamma_c, beta_c) picked by the target code c: the paper's
  "modulation-based conditional method".
* 1x1 conv back to 2g x 20 bins + IN, reshape to 2-D, two up-sampling blocks (Conv2d 5x5 ->
  pixel shuffle x2 -> GLU), output Conv2d (5, 15) to one channel.

Discriminator D(y, c_src, c_tgt): Conv2d 3x3 + GLU, three stride-2 Conv2d 3x3 + IN + GLU,
Conv2d (1, 5) + IN + GLU, global *sum* pooling over (freq, time), then a linear output plus
the projection term <e(c_src, c_tgt), h> with a learned embedding per (source, target) pair
(row ``src * K + tgt`` of a K^2-row table). ``disc_channels`` (d) is the first conv's width
before its GLU (paper d = 128: 128, 256, 512, 1024, 1024).

Losses (least-squares GAN, as in the paper): with x a real utterance of speaker c and
c' != c a target drawn per row,

* source-and-target conditional adversarial loss (paper Sec. 3.1, Eq. 5): a *real* sample is
  the real x of domain c seen as the target side of a pair whose source c'' is drawn at random,
  D(x, c'', c); a *fake* is the conversion G(x, c') seen with its true pair, D(G(x, c'), c, c').
  So for every pair (s, t) D compares real speech of t with speech converted s -> t, and G has
  to make every source convertible to every target (the plain StarGAN-VC loss only asks for
  "some t-like speech", which an easy source can satisfy alone).
  D: E[(D(x, c'', c) - 1)^2] + E[D(G(x, c'), c, c')^2];  G: E[(D(G(x, c'), c, c') - 1)^2].
* cycle: lambda_cyc * |G(G(x, c'), c) - x|_1;  identity: lambda_id * |G(x, c) - x|_1 while the
  step counter is below ``id_steps`` (the paper: 10^4 steps), 0 afterwards.

Choices where the paper is silent or does not apply:

* G is conditioned on the target code only, through CIN (the paper's notation G(x, c, c') also
  names the source). The toolkit's converter hands the model a target vector alone
  (``needs_source_vector`` is False), and a target-only G converts an input of any speaker.
* The paper draws the real pair's source c'' from all speakers, independently of x; here it is
  drawn among the speakers other than c, like the targets of the fakes, so D only learns the
  pairs s != t on which G is judged.
* Targets are drawn per row with torch's global RNG (which the trainer's checkpoints save and
  restore, so a resumed run draws the same targets). Each phase draws its own: the "disc" phase
  draws c' and c'', the "gen" phase a fresh c'. In eval mode (validation) targets are a fixed
  function of the row instead, so validation never consumes the training RNG.
* The output conv goes through a sigmoid: the mel features live in [0, 1] (the paper's
  normalised MCEPs are unbounded), so G's outputs are in the data range at every step and D
  cannot spot fakes by out-of-range values.
* Padding: crops shorter than T are padded. Every norm (IN and CIN) takes its statistics over
  valid frames only and padded positions are held at zero inside both networks; G's padded
  output frames are replaced by the input's padding; D's sum pooling covers valid frames only;
  the L1 losses average over valid frames. T is padded to a multiple of 4 internally and
  cropped back, so any length converts.
* D's output layer and pair embedding start at zero: D starts neutral (score 0 for every input,
  no gradient to G's outputs), so G's first updates come from the cycle and identity losses
  instead of a random D (with sum pooling a random D's scores are large).
* In the "gen" phase D runs with its weights detached (``torch.func.functional_call``): G's
  adversarial loss moves G only and D's weights get no gradients.
* Residual connections around the CIN blocks (the 1-D part of CycleGAN-VC2's generator, which
  StarGAN-VC2 takes over, is residual).
* ``convert`` uses the given target vector as a *soft* code: it is divided by the sum of its
  absolute values and multiplies the CIN tables, so a one-hot row of ``voice.table()``
  selects that speaker's exact (gamma, beta) and a mixture of rows interpolates them.

Shapes: mel (B, T, 80) in [0, 1]; lengths (B,); speaker (B,) labels; a speaker code is (K,)
or (B, K) with K = ``model.n_speakers`` (``speaker_dim``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..config import Config, StarGANConfig
from ..errors import ClsvcError
from .base import VCSystem
from .layers import length_mask, masked_mean
from .voices import TableVoice

# Time (and frequency) down-sampling factor of the generator: two stride-2 convs.
FACTOR = 4


def _mask_at(lengths: torch.Tensor | None, factor: int, t: int) -> torch.Tensor | None:
    """Valid-frame mask (B, t) at a resolution ``factor`` times coarser than ``lengths``'s
    (a stride-s conv with 'same' padding keeps output frame j iff s*j < length); None (no
    masking) when ``lengths`` is None, i.e. every frame is valid."""
    if lengths is None:
        return None
    return length_mask(torch.div(lengths + factor - 1, factor, rounding_mode="floor"), t)


def _masked_norm(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm of (B, C, T) or (B, C, F, T) over the valid (freq and) time positions;
    ``mask`` is (B, T), or None when every frame is valid (then the fused instance norm).
    Padded positions come out as zero. Statistics in float32 (AMP-safe)."""
    if mask is None:
        return F.instance_norm(x.float(), eps=eps).to(x.dtype)
    dtype = x.dtype
    x = x.float()
    m = _m(mask, x)
    dims = tuple(range(2, x.dim()))
    n = m.sum(dims, keepdim=True).clamp_min(1.0) * (x[0, 0].numel() // x.shape[-1])
    centred = (x - (x * m).sum(dims, keepdim=True) / n) * m
    var = (centred * centred).sum(dims, keepdim=True) / n
    return (centred * torch.rsqrt(var + eps)).to(dtype)


def _m(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, T) mask shaped to broadcast over x (B, C, T) or (B, C, F, T)."""
    return mask.to(x.dtype).view(mask.shape[0], 1, *([1] * (x.dim() - 3)), mask.shape[1])


def _apply(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """x with padded positions zeroed (x itself when nothing is padded)."""
    return x if mask is None else x * _m(mask, x)


class _Conv2dGLU(nn.Module):
    """Conv2d to 2C channels [-> pixel shuffle] [-> masked IN] -> GLU, on (B, C_in, F, T).
    Output (B, C, F', T') with C = ``cout // 2`` (// 4 more after a pixel shuffle)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, norm: bool = True, shuffle: bool = False):
        super().__init__()
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel[0] // 2, kernel[1] // 2))
        self.shuffle = nn.PixelShuffle(2) if shuffle else None
        self.norm = norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.shuffle is not None:
            h = self.shuffle(h)
        h = _masked_norm(h, mask) if self.norm else _apply(mask, h)
        return F.glu(h, dim=1)


class _CINBlock(nn.Module):
    """Residual block on (B, C, T): Conv1d k5 to 2C -> CIN(code) -> GLU, plus the input."""

    def __init__(self, channels: int, n_codes: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, padding=kernel // 2)
        # Per-speaker CIN parameters, one row per code: start as plain IN (gamma 1, beta 0).
        self.gamma = nn.Parameter(torch.ones(n_codes, 2 * channels))
        self.beta = nn.Parameter(torch.zeros(n_codes, 2 * channels))

    def forward(self, x: torch.Tensor, code: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = _masked_norm(self.conv(x), mask)
        gamma = (code @ self.gamma).unsqueeze(-1)
        beta = (code @ self.beta).unsqueeze(-1)
        h = _apply(mask, h * gamma + beta)
        return x + F.glu(h, dim=1)


class Generator(nn.Module):
    """(mel (B, T, M), code (B, K), lengths (B,)) -> mel (B, T, M) in (0, 1)."""

    def __init__(self, n_mels: int, n_codes: int, cfg: StarGANConfig):
        super().__init__()
        g, r = cfg.gen_channels, cfg.res_channels
        if n_mels % FACTOR or g % 2:
            raise ClsvcError(f"stargan needs n_mels divisible by {FACTOR} and an even stargan.gen_channels")
        self.f4 = n_mels // FACTOR
        self.inp = _Conv2dGLU(1, g, (5, 15), norm=False)
        self.down1 = _Conv2dGLU(g // 2, 2 * g, 5, stride=2)
        self.down2 = _Conv2dGLU(g, 4 * g, 5, stride=2)
        self.to1d = nn.Conv1d(2 * g * self.f4, r, 1)
        self.blocks = nn.ModuleList(_CINBlock(r, n_codes) for _ in range(cfg.res_blocks))
        self.to2d = nn.Conv1d(r, 2 * g * self.f4, 1)
        self.up1 = _Conv2dGLU(2 * g, 8 * g, 5, norm=False, shuffle=True)
        self.up2 = _Conv2dGLU(g, 4 * g, 5, norm=False, shuffle=True)
        self.out = nn.Conv2d(g // 2, 1, (5, 15), padding=(2, 7))

    def forward(self, mel: torch.Tensor, code: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, t, _ = mel.shape
        pad = (-t) % FACTOR
        x = mel.transpose(1, 2).unsqueeze(1)  # (B, 1, M, T)
        if pad:
            x = F.pad(x, (0, pad))
        tp = t + pad
        # Masks only when some frame is padded (a full batch takes the fused norms).
        valid = None if (pad == 0 and bool((lengths >= t).all())) else lengths
        m1, m2, m4 = (_mask_at(valid, f, tp // f) for f in (1, 2, 4))
        x = _apply(m1, x)  # padded frames act like the convs' zero padding
        h = self.down2(self.down1(self.inp(x, m1), m2), m4)  # (B, 2g, M/4, T/4)
        h = _masked_norm(self.to1d(h.flatten(1, 2)), m4)  # (B, r, T/4)
        for block in self.blocks:
            h = block(h, code, m4)
        h = _masked_norm(self.to2d(h), m4).unflatten(1, (-1, self.f4))  # (B, 2g, M/4, T/4)
        h = self.up2(self.up1(h, m2), m1)  # (B, g/2, M, T)
        y = torch.sigmoid(self.out(h))[:, 0, :, :t]  # (B, M, T)
        return y.transpose(1, 2)


class Discriminator(nn.Module):
    """(mel (B, T, M), pair index (B,) = src * K + tgt, lengths (B,)) -> scores (B,)."""

    def __init__(self, n_pairs: int, cfg: StarGANConfig):
        super().__init__()
        d = cfg.disc_channels
        if d % 2:
            raise ClsvcError("stargan.disc_channels must be even")
        self.inp = _Conv2dGLU(1, d, 3, norm=False)
        self.downs = nn.ModuleList([_Conv2dGLU(d // 2, 2 * d, 3, stride=2),
                                    _Conv2dGLU(d, 4 * d, 3, stride=2),
                                    _Conv2dGLU(2 * d, 8 * d, 3, stride=2)])
        self.last = _Conv2dGLU(4 * d, 8 * d, (1, 5))
        self.fc = nn.Linear(4 * d, 1)
        self.pair = nn.Embedding(n_pairs, 4 * d)  # projection conditioning on (source, target)
        # D starts neutral: score 0 for every input and no gradient to G's outputs, so G's
        # first updates come from the cycle and identity losses (the paper is silent on init).
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        nn.init.zeros_(self.pair.weight)

    def forward(self, mel: torch.Tensor, pair: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = mel.shape[1]
        valid = None if bool((lengths >= t).all()) else lengths
        m = _mask_at(valid, 1, t)
        h = self.inp(_apply(m, mel.transpose(1, 2).unsqueeze(1)), m)
        factor = 1
        for down in self.downs:
            factor *= 2
            m = _mask_at(valid, factor, -(-t // factor))
            h = down(h, m)
        h = self.last(h, m)
        pooled = _apply(m, h).sum((2, 3))  # global sum pooling over valid positions (B, 4d)
        return self.fc(pooled)[:, 0] + (self.pair(pair) * pooled).sum(-1)


class StarGANVC2(VCSystem):
    """StarGAN-VC2: generator + source-and-target projection discriminator (see the module
    docstring). ``phases`` = ("disc", "gen"); the step counter of the identity-loss schedule is
    the buffer ``steps`` (saved with the weights)."""

    phases = ("disc", "gen")
    training_only = ("discriminator.",)
    steps: torch.Tensor  # () long: generator steps so far (the identity-loss schedule)

    @classmethod
    def from_config(cls, cfg: Config) -> StarGANVC2:
        return cls(cfg.stargan, n_speakers=cfg.model.n_speakers, n_mels=cfg.mel.n_mels)

    def __init__(self, cfg: StarGANConfig, n_speakers: int, n_mels: int = 80):
        super().__init__()
        self.cfg = cfg
        self.n_speakers = n_speakers
        self.n_mels = n_mels
        self.generator = Generator(n_mels, n_speakers, cfg)
        self.discriminator = Discriminator(n_speakers * n_speakers, cfg)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # One-hot codes of the training speakers: the identity (K, K).
        self.voice = TableVoice(lambda: torch.eye(n_speakers), n_speakers)

    def param_groups(self, phase: str) -> list[dict[str, Any]]:
        """"disc": D at ``stargan.disc_lr_scale`` times the rate; "gen": G."""
        if phase == "disc":
            return [{"params": list(self.discriminator.parameters()), "lr_scale": self.cfg.disc_lr_scale}]
        if phase == "gen":
            return [{"params": list(self.generator.parameters())}]
        raise ClsvcError(f"stargan has phases {self.phases}, not {phase!r}")

    # ------------------------------------------------------------------ training

    def _other(self, speaker: torch.Tensor, salt: int) -> torch.Tensor:
        """A speaker != speaker[i] per row (B,): random (global RNG) in training, a fixed
        function of the row index in eval mode. ``salt`` varies the eval choice per use."""
        k = self.n_speakers
        if k < 2:
            return speaker
        if self.training:
            offset = torch.randint(1, k, speaker.shape).to(speaker.device)
        else:
            offset = (torch.arange(speaker.shape[0], device=speaker.device) + salt) % (k - 1) + 1
        return (speaker + offset) % k

    def _code(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.one_hot(labels, self.n_speakers).to(dtype)

    def _generate(self, mel: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """G(mel, one-hot(labels)) with the input's own padding kept in padded frames."""
        out = self.generator(mel, self._code(labels, mel.dtype), lengths)
        return torch.where(mask.unsqueeze(-1) > 0, out, mel)

    @staticmethod
    def _l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean |a - b| over valid frames and mel bins."""
        return masked_mean((a - b).abs().mean(-1), mask)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "gen") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """LSGAN loss of ``phase`` on a batch: "disc" updates D (G runs without gradients),
        "gen" updates G (D's weights are used as constants, so they get no gradients)."""
        k = self.n_speakers
        mask = length_mask(lengths, mel.shape[1])
        if phase == "disc":
            tgt = self._other(speaker, 0)
            with torch.no_grad():
                fake = self._generate(mel, tgt, lengths, mask)
            src_real = self._other(speaker, 1)  # the real x is the target side of (c'', c)
            d_real = self.discriminator(mel, src_real * k + speaker, lengths)
            d_fake = self.discriminator(fake, speaker * k + tgt, lengths)
            real_term = ((d_real - 1) ** 2).mean()
            fake_term = (d_fake ** 2).mean()
            loss = real_term + fake_term
            return loss, {"d_loss": loss.detach(), "d_real": real_term.detach(),
                          "d_fake": fake_term.detach(), "d_total": loss.detach()}
        if phase != "gen":
            raise ClsvcError(f"stargan has phases {self.phases}, not {phase!r}")
        c = self.cfg
        tgt = self._other(speaker, 0)
        fake = self._generate(mel, tgt, lengths, mask)
        frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        score = functional_call(self.discriminator, frozen, (fake, speaker * k + tgt, lengths))
        g_adv = ((score - 1) ** 2).mean()
        cyc = self._l1(self._generate(fake, speaker, lengths, mask), mel, mask)
        loss = g_adv + c.lambda_cyc * cyc
        if int(self.steps) < c.id_steps and c.lambda_id > 0:
            ident = self._l1(self._generate(mel, speaker, lengths, mask), mel, mask)
            loss = loss + c.lambda_id * ident
        else:
            ident = torch.zeros((), device=mel.device)
        if self.training:
            self.steps += 1
        return loss, {"g_adv": g_adv.detach(), "cyc": cyc.detach(), "id": ident.detach(),
                      "recon": cyc.detach(), "total": loss.detach()}

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target codes (B, K) or (K,) -> converted mels (B, T, M) in
        [0, 1]. A code is used as a soft code (divided by its L1 norm): a one-hot row selects
        a training speaker, a mixture interpolates the speakers' CIN parameters."""
        b, t, _ = mel.shape
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0).expand(b, -1)
        if speaker.shape[-1] != self.n_speakers:
            raise ClsvcError(
                f"stargan target code has {speaker.shape[-1]} entries, the model knows "
                f"{self.n_speakers} speakers; pass a row of its speaker table"
            )
        code = speaker.to(mel.dtype)
        code = code / code.abs().sum(-1, keepdim=True).clamp_min(1e-8)
        lengths = torch.full((b,), t, dtype=torch.long, device=mel.device)
        return self.generator(mel, code, lengths).clamp(0.0, 1.0)
