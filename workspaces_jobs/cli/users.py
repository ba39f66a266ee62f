"""``wsjobs users add|list|passwd|set-email|disable|enable``: the web view's local accounts.

They change ``$WSJOBS_HOME/accounts.db`` directly, so whoever can run them as the OS user
owning that folder is the machine's administrator (the file is 0600). Passwords are typed
at a hidden prompt (twice) or read from one line of standard input with
``--password-stdin`` (scripts; never a command-line argument, which ``ps`` shows).
"""

from __future__ import annotations

import sys

import typer

from workspaces_jobs.cli.output import console, print_json

users_app = typer.Typer(
    help="Accounts of the web view (sign-in and roles): add, list, passwd, set-email, disable,"
    " enable.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


def _password(from_stdin: bool) -> str:
    from workspaces_jobs.errors import BadInput
    from workspaces_jobs.identity.accounts import check_password

    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise BadInput("no password on standard input: pipe one line into --password-stdin")
        return check_password(password)
    first = typer.prompt("Password", hide_input=True)
    check_password(first)
    if typer.prompt("Password again", hide_input=True) != first:
        raise BadInput("the two passwords differ: run the command again")
    return str(first)


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="User name (letters, digits, . _ @ -)."),
    role: str = typer.Option(..., "--role", help="viewer, operator or admin."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from one line of standard input."
    ),
    email: str = typer.Option(
        "", "--email", help="Their own address: the one a viewer may subscribe to jobs."
    ),
) -> None:
    """Create an account; its password is asked for (or read with --password-stdin)."""
    from workspaces_jobs.identity.accounts import add_user, check_email, check_name, check_role

    check_name(name)
    checked = check_role(role)
    address = check_email(email)  # a bad address fails before the password is asked
    user = add_user(name, checked, _password(password_stdin), email=address)
    mail = f", {user.email}" if user.email else ""
    console.print(f"Added {user.name} ({user.role}{mail}).", markup=False, highlight=False)


@users_app.command("set-email")
def set_email(
    name: str = typer.Argument(..., help="User name."),
    email: str = typer.Argument(..., help="Their own address; '' clears it."),
) -> None:
    """Set an account's own address (a viewer may subscribe only that one to jobs)."""
    from workspaces_jobs.identity import set_email as store

    address = store(name, email)
    shown = address or "(none)"
    console.print(f"Email of {name}: {shown}.", markup=False, highlight=False)


@users_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print the accounts as JSON."),
) -> None:
    """Every account with its role and whether it is disabled (never a password)."""
    from workspaces_jobs.identity import list_users

    users = list_users()
    if as_json:
        print_json(
            [
                {"name": u.name, "role": u.role, "disabled": u.disabled, "email": u.email}
                for u in users
            ]
        )
        return
    if not users:
        console.print("No accounts yet: `wsjobs ui` creates admin on its first start.")
        return
    width = max(len(u.name) for u in users)
    for u in users:
        state = "  disabled" if u.disabled else ""
        mail = f"  {u.email}" if u.email else ""
        console.print(f"{u.name:<{width}}  {u.role:<8}{mail}{state}", markup=False, highlight=False)


@users_app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="User name."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from one line of standard input."
    ),
) -> None:
    """Set a new password; the user's open web sessions end."""
    from workspaces_jobs.errors import NotFound
    from workspaces_jobs.identity import get_user, set_password

    if get_user(name) is None:  # say so before asking for a password
        raise NotFound(f"no user {name!r}: see `wsjobs users list`")
    set_password(name, _password(password_stdin))
    console.print(f"New password set for {name}.", markup=False, highlight=False)


@users_app.command("disable")
def disable(name: str = typer.Argument(..., help="User name.")) -> None:
    """Disable an account: no sign-in, its sessions end, its API tokens stop working."""
    from workspaces_jobs.identity import set_disabled

    set_disabled(name, True)
    console.print(f"Disabled {name}.", markup=False, highlight=False)


@users_app.command("enable")
def enable(name: str = typer.Argument(..., help="User name.")) -> None:
    """Enable a disabled account again."""
    from workspaces_jobs.identity import set_disabled

    set_disabled(name, False)
    console.print(f"Enabled {name}.", markup=False, highlight=False)
