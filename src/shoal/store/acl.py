"""Who may do what on the embedded redis-server: shoal's own user may send only the commands shoal sends.

The embedded server has two users, each with a password of its own kept in the data directory (0600):

- ``shoal``, the user of ``DATA_DIR/redis/url``: nodes, ``shoal up``, ``shoal store`` and an operator's
  ``redis-cli -u "$(cat DATA_DIR/redis/url)"`` use it. It may run the commands in ``COMMANDS`` on shoal's
  keys and channels (``shoal:*``) and nothing else: no CONFIG, MODULE, DEBUG, SHUTDOWN, ACL, FLUSHALL or
  KEYS, so whoever holds the URL can read and change the cluster's tasks but not the server, its files or
  the machine it runs on.
- ``default``, the administrator, used only where shoal manages the server itself (asking a running
  server which directory it serves); its password is in ``DATA_DIR/redis/admin-password``.

Passwords reach redis-server as SHA-256 hashes in its config file, never in its arguments.
"""

from __future__ import annotations

import hashlib

#: The user of the URL that nodes and tools are given.
USER = "shoal"
#: Keys and channels the user may touch: every key and channel of every cluster (shoal.keys).
PATTERN = "shoal:*"

#: Every command shoal sends to its store, by where it comes from. A new Redis call needs its command
#: here, or the embedded store refuses it (NOPERM); the test suite runs its nodes as this user.
COMMANDS = (
    # connecting (redis-py): log in (RESP3: HELLO), name the connection, health checks
    "hello", "auth", "ping", "client|setname",
    # scripts (shoal.store.scripts, shoal.store.search): redis-py runs them by SHA and loads them when missing
    "evalsha", "script|load", "script|exists",
    # what the scripts call (shoal/store/scripts/*.lua, the search script), and reads and writes outside them
    "get", "set", "mget", "incr", "incrby", "exists", "del", "unlink", "expire", "pexpire", "persist", "time",
    "hdel", "hget", "hgetall", "hmget", "hset", "hincrby",
    "lindex", "llen", "lrange", "lrem", "lset", "ltrim", "rpush",
    "sadd", "scard", "smembers", "smismember", "srem",
    "zadd", "zcard", "zrange", "zrangebyscore", "zrevrangebyscore", "zrem", "zscore", "zmscore",
    "zlexcount", "zrangebylex",
    "multi", "exec", "discard",
    # streams: the pending streams, node inboxes and the timeline (scheduler, worker, reconcile)
    "xadd", "xack", "xdel", "xlen", "xrange", "xrevrange", "xreadgroup", "xpending", "xclaim", "xautoclaim",
    "xgroup|create", "xgroup|delconsumer", "xinfo|groups", "xinfo|consumers",
    # the task event stream (shoal.store.task_events): the event hub's catching up, and what a resumed watch missed
    "xread", "xinfo|stream",
    # pub/sub: task events as they are added, heartbeats, membership verdicts, election requests
    "publish", "subscribe", "unsubscribe",
    # the server's version in the log; who is connected, and a write pause, for a live backup
    "info", "client|list", "client|pause", "client|unpause",
    # the store's figures (shoal.store.stats): how many keys its database holds
    "dbsize",
    # shoal store backup and restore (shoal.store.backup)
    "scan", "dump", "pttl", "restore",
)  # fmt: skip


def commands_for(version: tuple[int, ...], product: str = "Redis") -> list[str]:
    """``COMMANDS``, plus what redis-py sends on connect where a rule may name it. Redis 7 and Valkey refuse
    a rule naming a subcommand they lack, and answer such a subcommand "unknown" before any ACL check;
    Redis 6.2 takes any name and checks the ACL first. CLIENT SETINFO is in Redis 7.2 and Valkey; CLIENT
    MAINT_NOTIFICATIONS (which redis-py tries and does without) in none that shoal runs on."""
    extra = []
    if product != "Redis" or not (7, 0) <= version < (7, 2):
        extra.append("client|setinfo")
    if product == "Redis" and version < (7, 0):
        extra.append("client|maint_notifications")
    return [*COMMANDS, *extra]


def hashed(password: str) -> str:
    """The form redis-server keeps a password in: ``#`` and its SHA-256 in hex."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_lines(password: str, admin_password: str, version: tuple[int, ...], product: str = "Redis") -> list[str]:
    """The ``user`` lines of the embedded server's config file."""
    allowed = " ".join("+" + command for command in commands_for(version, product))
    return [
        f"user default on {hashed(admin_password)} ~* &* +@all",
        f"user {USER} on {hashed(password)} resetchannels ~{PATTERN} &{PATTERN} -@all {allowed}",
    ]
