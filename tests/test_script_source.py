"""The Lua sources as loaded: includes inlined, less the helpers a script never uses (engine/scripts.py)."""

from __future__ import annotations

import re

from redis.asyncio import Redis

from queue_manager_server.engine.scripts import _INCLUDE, _LUA, Scripts, _source, strip_unused

SAMPLE = """\
local USED_VALUE = 3
local UNUSED_TABLE = {1, 2,
  3, 4}
local WRITES = redis.call('INCR', 'k')  -- a call: kept though nothing names it
local function leaf(x)
  return x + USED_VALUE
end
-- only_in_a_comment is named here, which keeps nothing
local function only_in_a_comment()
  return 1
end
local function used_by_unused()
  return 'leaf'
end
local function unused()
  return used_by_unused()
end
local function recursive(n)
  if n > 0 then return recursive(n - 1) end
  return 0
end
local s = 'the string names unused_in_string_only'
local function unused_in_string_only()
end
return {leaf(1), s}
"""


def _functions(text: str) -> set[str]:
    return set(re.findall(r"^\s*local function (\w+)", text, re.MULTILINE))


def test_strip_unused_drops_what_nothing_calls_and_keeps_the_rest() -> None:
    out = strip_unused(SAMPLE)
    # A helper named only by other dropped helpers goes too; one that only calls itself is unused as well.
    assert _functions(out) == {"leaf", "unused_in_string_only"}
    assert "local USED_VALUE = 3" in out
    assert "UNUSED_TABLE" not in out and "3, 4}" not in out
    assert "local WRITES = redis.call('INCR', 'k')" in out  # a statement with a call may write: kept
    assert "local s = 'the string names unused_in_string_only'" in out
    assert out.endswith("return {leaf(1), s}\n")


def test_strip_unused_leaves_a_script_without_spare_helpers_as_it_is() -> None:
    text = "local function f()\n  return 1\nend\nreturn f()\n"
    assert strip_unused(text) == text


def _unstripped(name: str) -> str:
    text = (_LUA / f"{name}.lua").read_text()
    return _INCLUDE.sub(lambda m: (_LUA / "includes" / f"{m.group(1)}.lua").read_text(), text)


BUILTINS = {"tonumber", "tostring", "unpack", "pairs", "ipairs", "type", "pcall", "error", "select", "next"}
KEYWORDS = {"function", "if", "return", "and", "or", "not", "elseif", "while", "until"}


def test_every_script_keeps_the_helpers_it_calls_and_sheds_the_others() -> None:
    shed = 0
    for name in Scripts.NAMES:
        text = _source(name, flags=False)
        defined = _functions(text)
        # An escape in a string (a pattern's "\n(") is not a call.
        called = set(re.findall(r"(?<![.:\w\\])(\w+)\(", re.sub(r"--[^\n]*", "", text))) - KEYWORDS - BUILTINS
        assert called <= defined, f"{name}.lua calls {sorted(called - defined)} but does not define them"
        before = _functions(_unstripped(name))
        assert defined <= before
        shed += len(before - defined)
    assert shed > 200  # most of includes/common.lua, in most scripts


async def test_every_stripped_script_loads(redis: Redis) -> None:
    await Scripts(redis).load_all()
