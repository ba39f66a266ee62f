"""Who is acting: local accounts, personal API tokens, web sessions and the one role table.

What Prefect OSS enforces, and what it does not
------------------------------------------------
Prefect's open-source server knows one credential: ``PREFECT_SERVER_API_AUTH_STRING``
(HTTP basic auth, one ``user:password`` for everyone). Whoever holds it may read, run,
cancel, delete or rerun anything; the server records no person, has no roles and no audit
log (those are Prefect Cloud features). Its own UI shares that one login.

What this product adds on top (enforced only where the product itself answers: the web
view and its JSON API; a user holding the Prefect credentials bypasses all of it):

* local accounts in ``$WSJOBS_HOME/accounts.db`` (SQLite, file mode 0600, never in the
  history: the history is a public audit file) with argon2id password hashes
  (:mod:`.accounts`);
* personal API tokens for the CLI, stored as SHA-256 hashes, shown once, revocable;
* server-side web sessions (:mod:`.sessions`), their ids stored hashed too;
* three roles, decided in one table (:mod:`.roles`): ``viewer`` reads, exports and
  subscribes its own address; ``operator`` also runs and schedules, and cancels, kills and
  reruns its own jobs; ``admin`` may do anything, on anyone's jobs, and manages users and
  shared view settings.
"""

from __future__ import annotations

from workspaces_jobs.identity.accounts import (
    ROLES,
    Role,
    User,
    add_user,
    ensure_admin,
    get_user,
    issue_token,
    list_users,
    revoke_token,
    set_disabled,
    set_email,
    set_password,
    user_for_token,
    verify_password,
)
from workspaces_jobs.identity.roles import Action, allowed, require, require_subscription

__all__ = [
    "ROLES",
    "Action",
    "Role",
    "User",
    "add_user",
    "allowed",
    "ensure_admin",
    "get_user",
    "issue_token",
    "list_users",
    "require",
    "require_subscription",
    "revoke_token",
    "set_disabled",
    "set_email",
    "set_password",
    "user_for_token",
    "verify_password",
]
