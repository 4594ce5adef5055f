"""Local Redis and PostgreSQL server processes for development and tests.

May import: servicekit, genproto
"""

from devstack.ports import free_port
from devstack.postgres_process import PostgresProcess
from devstack.redis_process import RedisProcess

__all__ = ["PostgresProcess", "RedisProcess", "free_port"]
