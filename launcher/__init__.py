"""alaunch: take MindSpore/MindFormers jobs from a laptop to Ascend hosts and back."""

__version__ = "0.1.0"
