"""The budget's counters in Redis: one atomic script per usage event.

Keys of one user share the ``{user}`` hash tag (one slot on Redis Cluster), the gate key
included (``cofounder_contracts.keys.budget_gate_key``), so the script touches them together:

- ``seen``: this event was counted (idempotency; expires with the day);
- ``spent``: the user's spend for the day (micros); missing means the counters were lost and
  must be rebuilt from the ledger first (the script then answers ``-1`` and changes nothing);
- ``build``: the build's total;
- ``warned`` / ``exhausted``: the day's 80% and 100% events went out (once a day each). Each
  holds the usage event that crossed the threshold and the spend and budget it saw
  (:class:`Crossing`): a retry of that event (its signal not sent before a crash or a Redis
  error) finds its crossing there and sends the same signal again, under the same id;
- ``daily``: the day's budget and the user's tier (``"<micros> <tier>"``), computed from the
  ledger at the day's first usage and again on a top-up or a plan change. The script reads the
  budget from it, so a top-up's new budget and a usage event never race;
- the gate: written when the spend reaches the budget, expiring at the reset.

The thresholds are the domain's (``cofounder_domain.budget``: ``WARN_AT``, ``EXHAUSTED_AT``): the
script's comparisons are written from those constants (:func:`reached_lua`), and a test runs the
script against :func:`cofounder_domain.budget.crossed` over a grid of spends and budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from redis.asyncio import Redis

from cofounder_contracts.keys import budget_gate_key, encode_gate
from cofounder_domain.budget import EXHAUSTED_AT, WARN_AT

__all__ = ["DAY_TTL_S", "Crossing", "Meter", "Metered", "day_keys", "reached_lua"]

DAY_TTL_S: Final = 3 * 24 * 3600


def reached_lua(spent: str, budget: str, at: tuple[int, int]) -> str:
    """The Lua condition ``spent`` has reached the share ``at`` of ``budget``, as
    :func:`cofounder_domain.budget.reached` computes it: integers only, exact while the
    products stay below 2**53 (Lua's numbers are doubles), a spend of some 900 million units."""
    numerator, denominator = (int(n) for n in at)  # numbers, never text, into the script
    return f"{spent} * {denominator} >= {budget} * {numerator}"


_METER: Final = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1, 0, 0, 0, 0} end
local daily = redis.call('GET', KEYS[7])
local budget = tonumber(daily and string.match(daily, '^%d+') or ARGV[2])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return {0, tonumber(redis.call('GET', KEYS[2])), redis.call('GET', KEYS[5]) or '',
          redis.call('GET', KEYS[6]) or '', budget}
end
local spent = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
local crossing = string.format('%s %d %d', ARGV[6], spent, budget)
if @WARN@ then redis.call('SET', KEYS[5], crossing, 'NX', 'EX', ARGV[3]) end
if @EXHAUSTED@ then
  redis.call('SET', KEYS[4], ARGV[4], 'PXAT', ARGV[5])
  redis.call('SET', KEYS[6], crossing, 'NX', 'EX', ARGV[3])
end
return {1, spent, redis.call('GET', KEYS[5]) or '', redis.call('GET', KEYS[6]) or '', budget}
""".replace("@WARN@", reached_lua("spent", "budget", WARN_AT)).replace(
    "@EXHAUSTED@", reached_lua("spent", "budget", EXHAUSTED_AT)
)

# Set the day's budget and open or close the gate to match it, in one step:
# {1 open | 0 closed | -1 counter missing, spent}.
_REBUDGET: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local budget = tonumber(string.match(ARGV[1], '^%d+'))
local spent = redis.call('GET', KEYS[2])
if not spent then
  redis.call('DEL', KEYS[3])
  return {-1, 0}
end
spent = tonumber(spent)
if spent < budget then
  redis.call('DEL', KEYS[3], KEYS[4])
  return {1, spent}
end
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[4])
return {0, spent}
"""


def day_keys(user_id: str, day: str) -> dict[str, str]:
    tag = f"{{{user_id}}}"
    return {
        "spent": f"cofounder.budget.spent:{tag}:{day}",
        "warned": f"cofounder.budget.warned:{tag}:{day}",
        "exhausted": f"cofounder.budget.exhausted:{tag}:{day}",
        "daily": f"cofounder.budget.daily:{tag}:{day}",
    }


@dataclass(frozen=True, slots=True)
class Crossing:
    """The usage event that crossed a threshold of the day, and the spend and budget it saw."""

    event_id: str
    spent: int
    budget: int

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Crossing | None:
        """A ``warned`` / ``exhausted`` key's value; None for none (or a value of an older
        release, a bare ``1``: that day's signal is not sent again)."""
        text = raw.decode() if isinstance(raw, bytes) else (raw or "")
        parts = text.split(" ")
        if len(parts) != 3:
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))


@dataclass(frozen=True, slots=True)
class Metered:
    counted: bool  # False: a duplicate
    spent: int
    budget: int  # the day's budget the script compared against
    #: The day's crossings of the warning and the exhaustion thresholds, whichever event made
    #: them (this one: send its signal, again if this is a retry).
    warned: Crossing | None = None
    exhausted: Crossing | None = None


class Meter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_METER)
        self._rebudget = redis.register_script(_REBUDGET)

    async def add(
        self,
        *,
        user_id: str,
        build_id: str,
        day: str,
        event_id: str,
        cost: int,
        budget: int,
        resets_at: datetime,
    ) -> Metered | None:
        """Count ``cost`` once; None when the day's counter is missing (rebuild, then retry)."""
        keys = day_keys(user_id, day)
        tag = f"{{{user_id}}}"
        counted, spent, warned, exhausted, used_budget = await self._script(
            keys=[
                f"cofounder.budget.seen:{tag}:{event_id}",
                keys["spent"],
                f"cofounder.budget.build:{tag}:{build_id}",
                budget_gate_key(user_id),
                keys["warned"],
                keys["exhausted"],
                keys["daily"],
            ],
            args=[
                cost,
                budget,
                DAY_TTL_S,
                encode_gate(resets_at),
                int(resets_at.timestamp() * 1000),
                event_id,
            ],
        )
        if int(counted) == -1:
            return None
        return Metered(
            bool(int(counted)),
            int(spent),
            int(used_budget),
            warned=Crossing.parse(warned),
            exhausted=Crossing.parse(exhausted),
        )

    async def crossings(self, *, user_id: str, day: str) -> tuple[Crossing | None, ...]:
        """The day's warning and exhaustion crossings (for a usage event whose ledger row was
        committed before: its signals may not have gone out)."""
        keys = day_keys(user_id, day)
        warned, exhausted = await self._redis.mget(keys["warned"], keys["exhausted"])
        return Crossing.parse(warned), Crossing.parse(exhausted)

    async def rebudget(
        self, *, user_id: str, day: str, budget: int, tier: str, resets_at: datetime
    ) -> bool | None:
        """Set the day's budget and the gate to match: True open, False closed, None when the
        day's counter is missing (the gate is then left open: the next usage rebuilds it)."""
        keys = day_keys(user_id, day)
        state, _spent = await self._rebudget(
            keys=[keys["daily"], keys["spent"], budget_gate_key(user_id), keys["exhausted"]],
            args=[
                f"{budget} {tier}",
                DAY_TTL_S,
                encode_gate(resets_at),
                int(resets_at.timestamp() * 1000),
            ],
        )
        return None if int(state) == -1 else bool(int(state))

    async def restore_day(self, *, user_id: str, day: str, spent: int) -> None:
        """Put back a lost day counter (from the ledger); a concurrent restore wins the same."""
        await self._redis.set(day_keys(user_id, day)["spent"], spent, nx=True, ex=DAY_TTL_S)

    async def spent(self, *, user_id: str, day: str) -> int | None:
        raw = await self._redis.get(day_keys(user_id, day)["spent"])
        return None if raw is None else int(raw)
