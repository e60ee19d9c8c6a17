"""keygate: a Secrets Store CSI Driver provider that attests pods before releasing secrets."""

__version__ = "0.1.0"
RUNTIME_NAME = "keygate"
