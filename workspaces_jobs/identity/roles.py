"""THE one table of who may do what; every face (web routes, JSON API, CLI through the API)
asks :func:`allowed` or :func:`require` and nothing else decides.

``owner`` is the person the target belongs to: the job's owner for cancel/kill/rerun/notify,
the schedule's creator for schedule edits, a saved filter's or subscription's creator. An
operator acts on its own things only; when the owner is unknown (``None``) on an action
that needs one, the operator is refused (it cannot be shown to be theirs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from workspaces_jobs.errors import Forbidden
from workspaces_jobs.identity.accounts import Role, User

Action = Literal[
    "read",
    "export",
    "subscribe",
    "run",
    "schedule",
    "cancel",
    "kill",
    "rerun",
    "notify",
    "note",
    "filters",
    "users",
    "view_settings",
]

_ALL: frozenset[Role] = frozenset({"viewer", "operator", "admin"})
_OPS: frozenset[Role] = frozenset({"operator", "admin"})
_ADMIN: frozenset[Role] = frozenset({"admin"})

#: action -> (roles that may, whether a non-admin must own the target, who-may text)
TABLE: dict[Action, tuple[frozenset[Role], bool, str]] = {
    "read": (_ALL, False, "every signed-in user"),
    "export": (_ALL, False, "every signed-in user"),
    # A viewer subscribes its own address; someone else's subscription is theirs or an admin's.
    "subscribe": (_ALL, True, "every signed-in user, for their own subscriptions"),
    "run": (_OPS, False, "operators and admins"),
    "schedule": (_OPS, True, "operators (their own schedules) and admins"),
    "cancel": (_OPS, True, "the job's owner (an operator) and admins"),
    "kill": (_OPS, True, "the job's owner (an operator) and admins"),
    "rerun": (_OPS, True, "the job's owner (an operator) and admins"),
    "notify": (_OPS, True, "the job's owner (an operator) and admins"),
    "note": (_OPS, False, "operators and admins"),
    "filters": (_OPS, True, "operators (their own filters and rules) and admins"),
    "users": (_ADMIN, False, "admins"),
    "view_settings": (_ADMIN, False, "admins"),
}

#: Actions whose owner check applies only when an owner is given (creating is not owning).
_OWNER_OPTIONAL: frozenset[Action] = frozenset({"subscribe", "schedule", "filters"})


def allowed(user: User, action: Action, *, owner: str | None = None) -> bool:
    """May ``user`` do ``action`` (to something ``owner`` owns)? A disabled user may nothing."""
    if user.disabled:
        return False
    roles, needs_owner, _ = TABLE[action]
    if user.role not in roles:
        return False
    if user.role == "admin" or not needs_owner:
        return True
    if owner is None:
        return action in _OWNER_OPTIONAL
    return owner == user.name


def require(user: User, action: Action, *, owner: str | None = None) -> None:
    """Raise :class:`~workspaces_jobs.errors.Forbidden` (exit 8) unless :func:`allowed`."""
    if allowed(user, action, owner=owner):
        return
    whose = f" {owner}'s" if owner and owner != user.name else ""
    target = f"{whose} job" if action in {"cancel", "kill", "rerun", "notify"} else ""
    raise Forbidden(
        f"{user.name} ({'disabled' if user.disabled else user.role}) may not {action}"
        f"{target}: only {TABLE[action][2]} may"
    )


def require_subscription(
    user: User,
    *,
    emails: Iterable[str] = (),
    webhooks: Iterable[str] = (),
    job_owner: str | None,
    now: bool = False,
) -> None:
    """May ``user`` subscribe (or unsubscribe) these targets to ``job_owner``'s job?

    Everyone may subscribe their OWN address (the account's email, compared without case)
    to any job they can read: that is ``subscribe``. Any other address, a webhook, or a
    summary sent ``now`` acts for the job's owner: that is ``notify`` (the job's owner, an
    operator, and admins). So a viewer subscribes only their own address, an operator any
    address to their own jobs and their own address to anyone's, an admin anything.
    Raise :class:`~workspaces_jobs.errors.Forbidden` (exit 8) saying which, else return.
    """
    own = user.email.casefold()
    others = [e for e in emails if not own or e.strip().casefold() != own]
    hooks = list(webhooks)
    if not others and not hooks and not now:
        require(user, "subscribe")
        return
    if allowed(user, "notify", owner=job_owner):
        return
    if user.disabled or user.role not in TABLE["subscribe"][0]:
        require(user, "subscribe")  # says the role may not at all
    what = ", ".join([*others, *hooks]) or "a summary now"
    mine = (
        f"their own address ({user.email})"
        if user.email
        else "their own address (none is set: an admin sets it with "
        f"`wsjobs users set-email {user.name} ADDRESS`)"
    )
    whose = f"{job_owner}'s job" if job_owner and job_owner != user.name else "this job"
    raise Forbidden(
        f"{user.name} ({user.role}) may not subscribe {what} to {whose}: they may subscribe "
        f"only {mine}; other addresses and webhooks are for {TABLE['notify'][2]}"
    )
