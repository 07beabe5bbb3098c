"""``python -m chatrelay_gateway users add|remove|list|passwd [NAME]``: manage the accounts
(``CHATRELAY_ACCOUNTS=1``) in the Redis that ``REDIS_URL`` names.

The password comes from a prompt, typed twice and never echoed, on a terminal; otherwise it
is the first line of standard input (``printf '%s\\n' "$PW" | ... users add NAME``). It is
never printed or logged.

Removing a user also deletes their conversations (open tabs get ``deleted``): a user added
later under the same name must not inherit them.

Exit codes: 0 done; 1 refused (the name is taken or unknown, a rule is broken, the two typed
passwords differ); 2 a usage error; 3 Redis is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO, cast

from chatrelay_common import AnyRedis, History, SessionNotFoundError, open_redis
from chatrelay_common._keys import OWNER_INDEX_PREFIX
from chatrelay_common._users import (
    InvalidCredentialError,
    UnknownUserError,
    UserExistsError,
    Users,
)
from chatrelay_litestar import user_owner
from redis.exceptions import RedisError

from ._settings import GatewaySettings

__all__ = ["read_password", "users_main"]

REFUSED = 1
USAGE = 2
UNAVAILABLE = 3


class _RefusedError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatrelay_gateway users",
        description="Manage chatrelay's accounts (used when CHATRELAY_ACCOUNTS=1).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, about in [
        ("add", "add a user (asks for the password)"),
        ("passwd", "set a user's password; ends every login of that user"),
        ("remove", "remove a user; ends every login of that user"),
    ]:
        commands.add_parser(name, help=about).add_argument("name", metavar="NAME")
    commands.add_parser("list", help="list the users, one a line")
    return parser


def read_password(
    stdin: TextIO, prompt: Callable[[str], str] = getpass.getpass, *, tty: bool | None = None
) -> str:
    """From a prompt (twice) on a terminal, else the first line of ``stdin``."""
    if tty if tty is not None else stdin.isatty():
        first = prompt("Password: ")
        if prompt("Repeat it: ") != first:
            raise _RefusedError("the two passwords differ; nothing changed")
        return first
    return stdin.readline().removesuffix("\n").removesuffix("\r")


async def _delete_conversations(history: History, redis: AnyRedis, user: str) -> int:
    """Deletes every conversation ``user`` made; how many there were."""
    index = OWNER_INDEX_PREFIX + user_owner(user)
    deleted = 0
    for session_id in await cast("Awaitable[list[bytes]]", redis.zrange(index, 0, -1)):
        try:
            await history.delete(session_id.decode())
            deleted += 1
        except SessionNotFoundError:  # expired meanwhile
            pass
    await cast("Awaitable[int]", redis.delete(index))
    return deleted


async def _run(arguments: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    settings = GatewaySettings()
    if not settings.accounts and arguments.command != "list":
        print(
            "note: CHATRELAY_ACCOUNTS is not set, so nobody logs in with these accounts yet",
            file=sys.stderr,
        )
    password = read_password(stdin) if arguments.command in ("add", "passwd") else ""
    async with open_redis(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        connect_timeout=settings.redis_connect_timeout,
    ) as redis:
        users = Users(redis)
        try:
            if arguments.command == "list":
                for name in await users.names():
                    print(name, file=out)
            elif arguments.command == "add":
                print(f"added user {await users.add(arguments.name, password)!r}", file=out)
            elif arguments.command == "passwd":
                name = await users.set_password(arguments.name, password)
                print(f"changed the password of {name!r}; their logins have ended", file=out)
            else:
                name = await users.remove(arguments.name)
                history = History(settings.session_store(redis))
                count = await _delete_conversations(history, redis, name)
                print(
                    f"removed user {name!r} and their {count} conversation(s); "
                    "their logins have ended",
                    file=out,
                )
        except UserExistsError as exc:
            raise _RefusedError(f"user {exc.args[0]!r} already exists") from None
        except UnknownUserError as exc:
            raise _RefusedError(f"there is no user {exc.args[0]!r}") from None
        except InvalidCredentialError as exc:
            raise _RefusedError(str(exc)) from None


def users_main(argv: list[str], stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    try:
        arguments = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return USAGE if exc.code else 0
    try:
        asyncio.run(_run(arguments, stdin, out))
    except _RefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    except (RedisError, OSError) as exc:
        print(f"error: Redis is unreachable ({type(exc).__name__}): {exc}", file=sys.stderr)
        return UNAVAILABLE
    except KeyboardInterrupt:
        return REFUSED
    return 0
