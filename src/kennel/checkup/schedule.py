"""Running checkups on a schedule without a server: a user crontab entry, or a systemd timer.

Entries are tagged with a comment naming the schedule, so installing again replaces the old
line instead of adding a second one, and the user's other crontab lines are kept untouched.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from datetime import datetime

from croniter import croniter

from kennel.errors import InvalidOptionError
from kennel.store.names import check_name

TAG = "# kennel-checkup:"


def check_cron(expr: str) -> str:
    if not croniter.is_valid(expr):
        raise InvalidOptionError(
            f"{expr!r} is not a cron expression.",
            hint='Five fields: minute hour day month weekday, e.g. "0 7 * * *" for 07:00 daily.',
        )
    return expr


def next_runs(expr: str, start: datetime, n: int = 3) -> list[datetime]:
    it = croniter(check_cron(expr), start)
    return [it.get_next(datetime) for _ in range(n)]


def command_line(args: list[str]) -> str:
    """The checkup command as cron runs it: this Python, this kennel, the user's arguments."""
    return " ".join(
        shlex.quote(a) for a in [sys.executable, "-m", "kennel.cli.main", "checkup", "run", *args]
    )


def crontab_line(name: str, expr: str, args: list[str]) -> str:
    # cron starts with an almost empty environment: carry where kennel keeps its data
    home = f"KENNEL_HOME={shlex.quote(os.environ['KENNEL_HOME'])} " if os.environ.get("KENNEL_HOME") else ""
    return (
        f"{check_cron(expr)} {home}{command_line(args)} >/dev/null 2>&1 "
        f"{TAG}{check_name(name, what='schedule name')}"
    )


def merged_crontab(current: str, name: str, line: str | None) -> str:
    """``current`` with the entry ``name`` replaced by ``line`` (or removed when None)."""
    kept = [ln for ln in current.splitlines() if not ln.rstrip().endswith(f"{TAG}{name}")]
    if line is not None:
        kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def install_crontab(name: str, line: str | None) -> str:
    """Write the user's crontab with the entry installed (or removed); returns the new crontab."""
    exe = shutil.which("crontab")
    if exe is None:
        raise InvalidOptionError(
            "There is no `crontab` command on this machine.",
            hint="Use --systemd to print a systemd timer instead.",
        )
    current = subprocess.run([exe, "-l"], capture_output=True, text=True, timeout=30)
    text = current.stdout if current.returncode == 0 else ""  # "no crontab for user" is exit 1
    new = merged_crontab(text, name, line)
    done = subprocess.run([exe, "-"], input=new, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise InvalidOptionError(f"crontab refused the new table: {done.stderr.strip()}")
    return new


def systemd_units(name: str, expr: str, args: list[str]) -> tuple[str, str]:
    """A service and a timer for `systemctl --user`; OnCalendar from the cron fields."""
    minute, hour, dom, month, dow = check_cron(expr).split()

    def f(x: str) -> str:  # cron's */15 and 1-5 are systemd's 0/15 and 1..5
        return "*" if x == "*" else x.replace("*/", "0/").replace("-", "..")

    days = "" if dow == "*" else f"{_weekdays(dow)} "
    calendar = f"{days}*-{f(month)}-{f(dom)} {f(hour)}:{f(minute)}:00"
    env = f"Environment=KENNEL_HOME={os.environ['KENNEL_HOME']}\n" if os.environ.get("KENNEL_HOME") else ""
    service = (
        f"[Unit]\nDescription=kennel checkup {name}\n\n[Service]\nType=oneshot\n{env}"
        f"ExecStart={command_line(args)}\n"
    )
    timer = (
        f"[Unit]\nDescription=kennel checkup {name} on schedule\n\n[Timer]\nOnCalendar={calendar}\n"
        "Persistent=true\n\n[Install]\nWantedBy=timers.target\n"
    )
    return service, timer


def _weekdays(dow: str) -> str:
    names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    out = []
    for part in dow.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.append(f"{names[int(a)]}..{names[int(b)]}")
        elif part.isdigit():
            out.append(names[int(part)])
        else:
            raise InvalidOptionError(
                f"--systemd cannot translate the weekday field {dow!r}; use numbers 0-7."
            )
    return ",".join(out)
