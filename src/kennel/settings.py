"""Where kennel keeps what it writes, from one settings definition (flags and KENNEL_* agree)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kennel.errors import home_not_writable


class KennelSettings(BaseSettings):
    """Process-wide settings read from KENNEL_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="KENNEL_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".kennel",
        description="Folder for everything kennel writes (caches, calibration, models).",
    )


class KennelHome:
    """The layout of KENNEL_HOME. Creating folders is left to the writer that needs them."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()

    @classmethod
    def from_env(cls) -> KennelHome:
        return cls(KennelSettings().home)

    @property
    def hardware_cache(self) -> Path:
        return self.root / "hardware.json"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    @property
    def hub_cache(self) -> Path:
        return self.root / "hub"

    def ensure(self) -> KennelHome:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def writable(self) -> KennelHome:
        """This home, known to take writes: a clear error now rather than a traceback later."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise home_not_writable(self.root, exc.strerror or exc) from exc
        return self
