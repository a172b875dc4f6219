"""clsvc: ClsVC voice conversion (one encoder split into speaker and content codes, a speaker
classifier on the speaker code and an adversarial classifier on the content code).

Quick use::

    import clsvc
    vc = clsvc.load("runs/cpu/checkpoints/last.pt")
    wav = vc.convert("source.wav", ["target1.wav", "target2.wav"])   # 16 kHz float32
    emb = vc.embed(["target1.wav"])                                   # (speaker_dim,)

Models shipped with clsvc load by name (``clsvc.pretrained.available()`` lists them)::

    vc = clsvc.load(NAME, vocoder=VOCODER_NAME)
"""

__version__ = "0.1.0"

from .errors import ClsvcError


def load(checkpoint, device="cpu", **kw):
    """Rebuild a :class:`clsvc.inference.Converter` from a checkpoint file, or the name of a model
    shipped with clsvc, alone (``vocoder=``: ``griffin-lim``, a vocoder file or a shipped name)."""
    from .inference import load as _load

    return _load(checkpoint, device=device, **kw)


__all__ = ["ClsvcError", "load", "__version__"]
