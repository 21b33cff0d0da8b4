"""Environment switches, parsed as users expect: 1/true/yes/on and 0/false/no/off (any case).

An empty or unset variable takes the default; anything else is a ConfigError naming the
variable, its value and what is allowed.
"""

from __future__ import annotations

import os

from samplekit.errors import ConfigError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw[:40]!r}: expected one of {', '.join(TRUE)} "
                      f"(on) or {', '.join(FALSE)} (off)")
