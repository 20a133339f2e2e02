"""The only asyncio layer for objects: activation and eviction, gates, the durability barrier,
background services and the supervisor that owns their tasks. Imports storage, core and the base
modules; never the api or http layers."""

from .activation import Activation, current_activation
from .barrier import DurabilityBarrier
from .catalog import ClassEntry, Runtime, RuntimeLimits

__all__ = ["Activation", "ClassEntry", "DurabilityBarrier", "Runtime", "RuntimeLimits", "current_activation"]
