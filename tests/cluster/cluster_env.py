"""What the cluster tests share: tokens, slots, health-check settings, the node servers' configuration."""

from streamfx.server.config import Limits, ServerConfig

TOKEN = "caller-token"
ADMIN = "admin-token"
SLOTS = 2
#: short health checks, so that a killed node is declared dead within about a second
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                 "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}
NODE_CONFIG = ServerConfig(engine="mesh", ice_loopback=True, stats_interval_s=0.5,
                           limits=Limits(admit_by_cost=False, connect_timeout_s=4.0))
