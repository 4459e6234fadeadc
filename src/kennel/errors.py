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
    ├── ClassifierUnavailableError  the guard's ONNX classifier needs onnxruntime/tokenizers
    │                               (also ImportError)
    ├── MeasureError                a measured run (``kennel fit --measure``) failed
    ├── FinetuneError               `kennel finetune` cannot train or cannot use what it made
    │   ├── FinetuneUnavailableError torch / transformers / peft are not installed (also ImportError)
    │   ├── TrainingDataError       malformed lines in a training or eval file (also ValueError)
    │   ├── AdapterMismatchError    an adapter or checkpoint made for another base (shape or sha256)
    │   └── TrainingStoppedError    Ctrl-C: training stopped at a step, its checkpoint kept
    ├── AuthError                   HTTP 401: a missing, wrong, revoked or expired API key
    ├── ForbiddenError              HTTP 403: a valid API key not allowed to use that model
    ├── RateLimitError              HTTP 429: an API key over its requests-per-minute limit
    ├── ServingError                a request the server cannot serve (carries an HTTP status)
    │   ├── InvalidRequestError     400: a request body kennel cannot act on
    │   │   └── ContextLengthError  400: prompt (and answer) longer than the model's context
    │   ├── RequestTimeoutError     408: the client took too long to send its request
    │   ├── RequestTooLargeError    413: a request body over the server's limit
    │   ├── ModelNotServedError     404: no model by that name on this server
    │   ├── QueueFullError          429: the model's queue is full (Retry-After)
    │   ├── ClientGoneError         499: the client disconnected before its answer (nginx's code)
    │   ├── ModelLoadError          500: llama.cpp refused to load the model
    │   ├── EngineError             500: the engine failed while generating
    │   ├── ModelLoadingError       503: the model is loading or busy and the client will not wait
    │   ├── InsufficientMemoryError 503: loading would overcommit RAM or VRAM
    │   └── PromptInjectionError    400: the prompt-injection guard (mode "block") refused the input
    └── StoreError                  the local model store refused or failed an operation
        ├── InvalidNameError        a model name or tag with '..', slashes or shell characters
        ├── NotInStoreError         no such model, version or tag in the store (also LookupError)
        ├── ChecksumError           bytes whose sha256 is not the one promised (hub, bundle)
        ├── DiskSpaceError          not enough free disk, before or during a write
        ├── InUseError              a tag or a running server still uses what would be removed
        ├── HomeNotWritableError    KENNEL_HOME is read-only, not ours, or its disk is full
        │                           (also PermissionError)
        └── BundleError             an export bundle that is malformed or unsafe
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


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


class FinetuneError(KennelError):
    """`kennel finetune` cannot train, or cannot turn what it trained into a servable model."""


class FinetuneUnavailableError(FinetuneError, ImportError):
    """The training stack (torch, transformers, peft) is not installed."""


class TrainingDataError(FinetuneError, ValueError):
    """Lines of a training or eval file that cannot be used; the message names each line."""


class AdapterMismatchError(FinetuneError):
    """An adapter, its training weights or a checkpoint that belong to another base model."""


class TrainingStoppedError(FinetuneError):
    """Training was stopped (Ctrl-C) at a step boundary; the checkpoint there is kept."""

    exit_code = 130  # as for any Ctrl-C


class AuthError(KennelError):
    """No usable API key. The message is the same for a wrong, revoked or expired key, so a caller
    learns nothing about which keys exist; ``reason`` says which it was, for the server's log."""

    status_code = 401

    def __init__(self, message: str, *, hint: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason  # missing | malformed | invalid | revoked | expired


class ForbiddenError(KennelError):
    """A valid API key asked for a model outside its allow-list."""

    status_code = 403


class ForeignRequestError(ForbiddenError):
    """A web page's request (an Origin not allowed) or a non-loopback Host on a loopback bind."""


class StoreApiError(ForbiddenError):
    """An API client asked to change the model store where that is not allowed."""


class RateLimitError(KennelError):
    """An API key sent more requests in the last minute than its limit allows."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after  # seconds until a request would be accepted again


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


class HomeNotWritableError(StoreError, PermissionError):
    """KENNEL_HOME cannot take writes: read-only, owned by someone else, or its disk is full."""


def home_not_writable(where: object, reason: object) -> HomeNotWritableError:
    return HomeNotWritableError(
        f"KENNEL_HOME is not writable: {where} ({reason}).",
        hint="Fix the folder's permissions or free disk space, or set KENNEL_HOME to a folder you can write "
        "(KENNEL_HOME=~/kennel).",
    )


class BundleError(StoreError):
    """An export bundle that is malformed, incomplete or unsafe to unpack."""


class ServingError(KennelError):
    """A request the server cannot serve; ``status_code`` is its HTTP status."""

    status_code = 500

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class InvalidRequestError(ServingError, ValueError):
    status_code = 400


class ContextLengthError(InvalidRequestError):
    """The prompt does not fit the model's context."""


class RequestTimeoutError(ServingError):
    status_code = 408


class RequestTooLargeError(ServingError):
    status_code = 413


class ModelNotServedError(ServingError, LookupError):
    status_code = 404


class QueueFullError(ServingError):
    status_code = 429


class ClientGoneError(ServingError):
    status_code = 499


class ModelLoadError(ServingError):
    status_code = 500


class EngineError(ServingError):
    status_code = 500


class ModelLoadingError(ServingError):
    status_code = 503


class InsufficientMemoryError(ServingError):
    status_code = 503


class PromptInjectionError(ServingError):
    """The prompt-injection guard, in mode "block", found an injection in the request. The envelope
    type is ``error_type``; ``labels`` name what matched (override, reveal_prompt, ...) for logs."""

    status_code = 400
    error_type = "prompt_injection"

    def __init__(self, message: str, *, hint: str | None = None, labels: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.labels = labels


class ClassifierUnavailableError(KennelError, ImportError):
    """onnxruntime or tokenizers is not installed, so no ONNX classifier can run."""


def validation_problem(error: Mapping[str, Any], *, drop: Collection[str] = ()) -> tuple[str, str]:
    """One of pydantic's errors as a person reads it: where (``models[0].name``; the parts in
    ``drop``, such as FastAPI's "body", left out) and what, without the "Value error, " that
    pydantic puts before a validator's own words."""
    where = ""
    for part in error.get("loc", ()):
        if isinstance(part, int):
            where += f"[{part}]"
        elif str(part) not in drop:
            where += f".{part}" if where else str(part)
    what = str(error.get("msg", "invalid")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return where, what


def validation_text(error: Mapping[str, Any]) -> str:
    """``where: what`` (or ``what`` alone) for one of pydantic's errors; see ``validation_problem``."""
    return ": ".join(p for p in validation_problem(error) if p)
