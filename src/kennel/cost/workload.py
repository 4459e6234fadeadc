"""The load to plan for, in a team's words, and the latency it must be served at.

A team sends ``users x requests_per_user_day`` requests on a working day, spread over its busy
hours; the busiest minutes run ``peak_factor`` times that average rate. How many requests are in
flight at the peak follows from Little's law: arrivals per second times the seconds each one
takes. At the latency floor (the first token within the TTFT target, then the answer at the
minimum tokens per second) that is ``peak_rps x (ttft_p95 + output_tokens / min_tok_s)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kennel.errors import InvalidOptionError
from kennel.units import at_least_one

HOURS_PER_MONTH = 730.0  # 8760 / 12: machines run (and draw power) around the clock
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
WORKING_DAYS = 22.0  # a month's working days, when the team works on weekdays only


@dataclass(frozen=True)
class Targets:
    """What "fast enough" means: the 95th-percentile time to the first token, and the slowest a
    reply may stream (per request, with every other request of the peak running beside it)."""

    ttft_p95_s: float = 2.0
    min_tok_s: float = 15.0

    def __post_init__(self) -> None:
        if not (self.ttft_p95_s > 0 and self.min_tok_s > 0):
            raise InvalidOptionError(
                "--ttft-p95 and --min-tok-s must be above 0.",
                hint="For example --ttft-p95 2s --min-tok-s 15.",
            )

    def describe(self) -> str:
        return f"TTFT p95 <= {self.ttft_p95_s:g} s and >= {self.min_tok_s:g} tok/s per request"


@dataclass(frozen=True)
class Workload:
    """Requests per working day, their sizes, and when they come."""

    requests_per_day: float
    prompt_tokens: int
    output_tokens: int
    busy_hours: float = 8.0
    days_per_month: float = WORKING_DAYS
    peak_factor: float = 3.0
    users: int | None = None  # how the load was given, for the explanation
    requests_per_user_day: float | None = None

    def __post_init__(self) -> None:
        if not self.requests_per_day > 0:
            raise InvalidOptionError(
                "The load is zero: give --users and --requests-per-user-day above 0.",
                hint="For example --users 40 --requests-per-user-day 30.",
            )
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise InvalidOptionError(
                "--prompt-tokens and --output-tokens must be at least 1.",
                hint="For example --prompt-tokens 800 --output-tokens 300.",
            )
        if not 0 < self.busy_hours <= 24:
            raise InvalidOptionError("--hours must be between 0 and 24.", hint="For example --hours 8.")
        if not 0 < self.days_per_month <= 31:
            raise InvalidOptionError("--days must be between 1 and 31.", hint="22 for weekdays, 30 for all.")
        if not 1 <= self.peak_factor <= 100:
            raise InvalidOptionError(
                "--peak-factor must be at least 1 (the peak is the busiest rate, not below the average).",
                hint="For example --peak-factor 3.",
            )

    @classmethod
    def team(
        cls,
        *,
        users: int,
        requests_per_user_day: float,
        prompt_tokens: int,
        output_tokens: int,
        busy_hours: float = 8.0,
        days_per_month: float = WORKING_DAYS,
        peak_factor: float = 3.0,
    ) -> Workload:
        if users < 1 or requests_per_user_day <= 0:
            raise InvalidOptionError(
                "--users must be at least 1 and --requests-per-user-day above 0.",
                hint="For example --users 40 --requests-per-user-day 30.",
            )
        return cls(
            requests_per_day=users * requests_per_user_day,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            busy_hours=busy_hours,
            days_per_month=days_per_month,
            peak_factor=peak_factor,
            users=users,
            requests_per_user_day=requests_per_user_day,
        )

    @classmethod
    def monthly_tokens(
        cls,
        *,
        input_tokens: float,
        output_tokens: float,
        output_per_request: int,
        busy_hours: float = 8.0,
        days_per_month: float = WORKING_DAYS,
        peak_factor: float = 3.0,
    ) -> Workload:
        """A month's token volume: requests are the output over ``output_per_request``, and each
        request's prompt is the input over those requests."""
        if input_tokens <= 0 or output_tokens <= 0:
            raise InvalidOptionError(
                "--tokens-per-month needs input and output above 0.",
                hint="For example --tokens-per-month 30M,10M (input, output).",
            )
        requests = output_tokens / output_per_request
        return cls(
            requests_per_day=requests / days_per_month,
            prompt_tokens=max(1, round(input_tokens / requests)),
            output_tokens=output_per_request,
            busy_hours=busy_hours,
            days_per_month=days_per_month,
            peak_factor=peak_factor,
        )

    # ---- volumes ----------------------------------------------------------------------------------
    @property
    def requests_per_month(self) -> float:
        return self.requests_per_day * self.days_per_month

    @property
    def input_tokens_per_month(self) -> float:
        return self.requests_per_month * self.prompt_tokens

    @property
    def output_tokens_per_month(self) -> float:
        return self.requests_per_month * self.output_tokens

    @property
    def tokens_per_month(self) -> float:
        return self.input_tokens_per_month + self.output_tokens_per_month

    # ---- rates ------------------------------------------------------------------------------------
    @property
    def busy_rps(self) -> float:
        """The average rate over the busy hours."""
        return self.requests_per_day / (self.busy_hours * 3600)

    @property
    def peak_rps(self) -> float:
        return self.busy_rps * self.peak_factor

    @property
    def month_rps(self) -> float:
        """The average rate over the whole month, nights and weekends included (what power and
        average utilisation follow)."""
        return self.requests_per_month / SECONDS_PER_MONTH

    def peak_in_flight(self, targets: Targets) -> float:
        """Requests in flight at the peak if each one is served exactly at the targets."""
        return self.peak_rps * (targets.ttft_p95_s + self.output_tokens / targets.min_tok_s)

    def scaled(self, factor: float) -> Workload:
        """The same team sending ``factor`` times as many requests."""
        return replace(
            self,
            requests_per_day=self.requests_per_day * factor,
            users=None,
            requests_per_user_day=None,
        )

    def lines(self, targets: Targets) -> list[str]:
        if self.users is not None and self.requests_per_user_day is not None:
            volume = (
                f"{self.users} users x {self.requests_per_user_day:g} requests a day = "
                f"{self.requests_per_day:,.0f} requests a working day"
            )
        else:
            volume = f"{self.requests_per_day:,.0f} requests a working day"
        in_flight = self.peak_in_flight(targets)
        return [
            f"{volume}, {self.prompt_tokens} prompt + {self.output_tokens} output tokens each; "
            f"{self.days_per_month:g} days a month = {self.tokens_per_month / 1e6:,.1f}M tokens a month "
            f"({self.input_tokens_per_month / 1e6:,.1f}M in, {self.output_tokens_per_month / 1e6:,.1f}M out)",
            f"over {self.busy_hours:g} busy hours that is {self.busy_rps:.3f} requests/s; the peak runs "
            f"{self.peak_factor:g}x that: {self.peak_rps:.3f} requests/s",
            f"in flight at the peak (Little's law): {self.peak_rps:.3f}/s x ({targets.ttft_p95_s:g} s to the "
            f"first token + {self.output_tokens} tokens / {targets.min_tok_s:g} tok/s) = {in_flight:.1f} "
            f"-> {at_least_one(in_flight)} requests at once at most",
        ]
