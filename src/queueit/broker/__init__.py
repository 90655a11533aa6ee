"""The queueit broker. Only :mod:`.session` and :mod:`.server` touch the network."""

from .config import BrokerSettings, ConfigError, load_settings
from .core import BrokerCore
from .server import BrokerServer, build_core, run_broker

__all__ = [
    "BrokerCore",
    "BrokerServer",
    "BrokerSettings",
    "ConfigError",
    "build_core",
    "load_settings",
    "run_broker",
]
