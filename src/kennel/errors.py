"""kennel's one error tree.

Every error a user can cause or meet carries a message saying what is wrong and a hint saying
what to do next. The CLI turns them into one line and exit code 2 (``cli/main.py``); the HTTP
layer will turn them into OpenAI's error envelope.

    KennelError
    ├── InvalidOptionError          a flag or setting with an impossible value
    ├── ModelSourceError            a model name, path or URL that cannot be used
    │   ├── ModelNotFoundError      nothing at that path, repo or URL (also FileNotFoundError)
    │   ├── NotGGUFError            the bytes are not a GGUF file (HTML, safetensors, garbage)
    │   ├── TruncatedModelError     a GGUF whose header or data is cut short
    │   └── UnsupportedModelError   a config.json / GGUF architecture kennel cannot size
    ├── RemoteError                 the hub or a URL failed (network, 5xx, auth)
    ├── HardwareSpecError           a what-if GPU or profile kennel does not know
    ├── MeasureError                a measured run (``kennel fit --measure``) failed
    └── StoreError                  the local model store refused or failed an operation
        ├── InvalidNameError        a model name or tag with '..', slashes or shell characters
        ├── NotInStoreError         no such model, version or tag in the store (also LookupError)
        ├── ChecksumError           bytes whose sha256 is not the one promised (hub, bundle)
        ├── DiskSpaceError          not enough free disk, before or during a write
        ├── InUseError              a tag or a running server still uses what would be removed
        └── BundleError             an export bundle that is malformed or unsafe
"""

from __future__ import annotations


class KennelError(Exception):
    """Base of every error kennel raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class InvalidOptionError(KennelError, ValueError):
    """A flag or setting outside what kennel (or llama.cpp) accepts."""


class ModelSourceError(KennelError):
    """A model reference that cannot be read or sized."""


class ModelNotFoundError(ModelSourceError, FileNotFoundError):
    """No model at the given path, repository, file or URL."""


class NotGGUFError(ModelSourceError):
    """The bytes do not start with the GGUF magic."""


class TruncatedModelError(ModelSourceError):
    """The GGUF header or tensor data ends before it should."""


class UnsupportedModelError(ModelSourceError):
    """An architecture kennel does not know how to size."""


class RemoteError(KennelError):
    """A hub or URL request failed for a reason other than 'not found'."""


class HardwareSpecError(KennelError, LookupError):
    """A what-if hardware description kennel cannot resolve."""


class MeasureError(KennelError):
    """A measured benchmark run could not complete."""


class StoreError(KennelError):
    """The local model store refused or could not complete an operation."""


class InvalidNameError(StoreError, ValueError):
    """A model name or tag kennel will not use (path tricks, shell characters)."""


class NotInStoreError(StoreError, LookupError):
    """No model, version or tag by that name in the store."""


class ChecksumError(StoreError):
    """Bytes whose sha256 differs from the one the source promised."""


class DiskSpaceError(StoreError, OSError):
    """Not enough free disk space to finish writing."""


class InUseError(StoreError):
    """What would be removed is still used by a tag or a running server."""


class BundleError(StoreError):
    """An export bundle that is malformed, incomplete or unsafe to unpack."""
