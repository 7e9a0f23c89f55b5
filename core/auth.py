"""Who may use the dashboard and see which records. Off unless configured in .streamlit/secrets.toml.

Passwords (bcrypt hashes; make one with `python -m core.auth`):

    [auth.users.ann]
    password_hash = "$2b$12$..."
    role = "admin"            # "admin" sees every record; "user" (the default) sees their own

Single sign-on through Streamlit's st.login (OpenID Connect): the [auth] keys Streamlit documents
(redirect_uri, cookie_secret, client_id, client_secret, server_metadata_url, or one [auth.<provider>] table each),
plus, optionally, `admins = ["email@clinic.org"]` naming who gets the admin role.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Mapping

import bcrypt

ROLES = ("user", "admin")
# Checked when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$12$ZhJM9HUrNM6U9q2m22k14u3rUGSfR4g1DWnor5Bafof05MhQ.bBE."


@dataclass(frozen=True)
class User:
    name: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AuthConfig:
    users: dict[str, tuple[bytes, str]]  # name -> (bcrypt hash, role)
    oidc_providers: tuple[str, ...]  # () when st.login is not configured; ("",) for the unnamed default provider
    admins: frozenset[str]

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.oidc_providers)

    def role_of(self, name: str) -> str:
        if name in self.users:
            return self.users[name][1]
        return "admin" if name in self.admins else "user"


def config_from_secrets(secrets: Mapping | None) -> AuthConfig:
    """Read the [auth] table of Streamlit secrets (any mapping). Raises ValueError on a malformed entry."""
    auth = _plain(secrets.get("auth", {})) if secrets else {}
    users = {}
    for name, entry in (auth.get("users") or {}).items():
        if not isinstance(entry, dict) or not entry.get("password_hash"):
            raise ValueError(f"[auth.users.{name}] needs password_hash (make one with `python -m core.auth`)")
        role = entry.get("role", "user")
        if role not in ROLES:
            raise ValueError(f"[auth.users.{name}] role must be one of {', '.join(ROLES)}, not {role!r}")
        users[str(name)] = (str(entry["password_hash"]).encode(), role)
    providers = []
    if "client_id" in auth:
        providers.append("")
    providers += [k for k, v in auth.items() if k != "users" and isinstance(v, dict) and "client_id" in v]
    return AuthConfig(users, tuple(providers), frozenset(auth.get("admins", [])))


def check_password(config: AuthConfig, name: str, password: str) -> User | None:
    """The user when the password matches their stored hash, else None (same cost whether or not the name exists)."""
    name = (name or "").strip()
    stored, role = config.users.get(name, (_DUMMY_HASH, ""))
    try:
        ok = bcrypt.checkpw((password or "").encode(), stored)
    except ValueError:  # a malformed hash in the secrets file
        ok = False
    return User(name, role) if ok and name in config.users else None


MAX_FAILURES, LOCKOUT_S = 5, 15 * 60  # per user name, across every browser of this server process
_failures: dict[str, list[float]] = {}
_failures_lock = threading.Lock()


def locked_for(name: str, now: float | None = None) -> float:
    """Seconds this user name stays locked after MAX_FAILURES wrong passwords within LOCKOUT_S (0: not locked)."""
    now = time.time() if now is None else now
    with _failures_lock:
        recent = [t for t in _failures.get(name.strip(), []) if now - t < LOCKOUT_S]
        _failures[name.strip()] = recent
    return LOCKOUT_S - (now - recent[-MAX_FAILURES]) if len(recent) >= MAX_FAILURES else 0.0


def sign_in(config: AuthConfig, name: str, password: str, now: float | None = None) -> User | None:
    """check_password, counting wrong passwords per user name; a locked name is refused without checking."""
    if locked_for(name, now):
        return None
    user = check_password(config, name, password)
    with _failures_lock:
        if user is None:
            _failures.setdefault(name.strip(), []).append(time.time() if now is None else now)
        else:
            _failures.pop(name.strip(), None)
        if len(_failures) > 1000:  # any typed name is counted: forget the ones with no recent failure
            moment = time.time() if now is None else now
            for stale in [n for n, times in _failures.items() if not times or moment - times[-1] >= LOCKOUT_S]:
                del _failures[stale]
    return user


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()


def _plain(obj):
    """Streamlit's secrets are read-only mapping types; turn them into dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


if __name__ == "__main__":
    import getpass

    user = input("user name: ").strip()
    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        raise SystemExit("the passwords differ")
    print(f'\n[auth.users.{user}]\npassword_hash = "{hash_password(password)}"\nrole = "user"  # or "admin"')
