"""What the console keeps while the server runs, built once in the app's lifespan
(``ConsoleState.build``) and kept on ``app.state.console``: the sessions, the message catalogs,
the Jinja2 environment and the overview's last hour of samples."""

from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import Environment

from kennel.console.i18n import Catalogs
from kennel.console.render import environment
from kennel.console.sampler import Samples
from kennel.console.session import SessionStore


@dataclass
class ConsoleState:
    catalogs: Catalogs
    templates: Environment
    sessions: SessionStore = field(default_factory=SessionStore)
    samples: Samples = field(default_factory=Samples)

    @classmethod
    def build(cls) -> ConsoleState:
        return cls(Catalogs.load(), environment())
