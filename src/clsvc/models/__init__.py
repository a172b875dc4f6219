"""Models. :class:`ClsVC` is the paper's system; baselines arrive in later issues."""

from .clsvc import ClsVC, ClsVCOutput
from .losses import clsvc_losses

__all__ = ["ClsVC", "ClsVCOutput", "clsvc_losses"]
