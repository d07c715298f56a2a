"""The compute thread: requests and replies (:mod:`.messages`), the worker that owns the model
(:mod:`.worker`), and the GUI-thread controller that hands out jobs (:mod:`.controller`)."""

from .controller import Controller
from .messages import HeatmapReply, LoadedModel, RunProgress

__all__ = ["Controller", "HeatmapReply", "LoadedModel", "RunProgress"]
