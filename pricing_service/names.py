"""How the names gateways send map to catalog entries: explicit aliases first, then clear rules.

`openai/gpt-4o`, `gpt-4o-2024-08-06`, `anthropic.claude-sonnet-4-5-20250929-v1:0` and
`claude-3-5-sonnet@20240620` are tried as given, then with the host prefix removed, then with
the version and date suffixes removed, in that order; the first name the catalog knows wins.
"""

from __future__ import annotations

import re

# provider/model (LiteLLM, OpenRouter), provider.model (Bedrock)
_PREFIX = re.compile(r"^(?:[a-z0-9_-]+/)+|^(?:us\.|eu\.|apac\.)?(?:anthropic|meta|mistral|amazon|"
                     r"cohere|ai21|deepseek)\.")  # fmt: skip
_VERSION = re.compile(r"-v\d+(?::\d+)?$|:\d+$")  # Bedrock's -v1:0
_DATE = re.compile(r"(?:-|@)(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")  # -2024-08-06, -20250929, @0613


def candidates(name: str) -> list[str]:
    """The names to look up for `name`, most specific first, without repeats."""
    out = [name]
    bare = _PREFIX.sub("", name)
    out.append(bare)
    unversioned = _VERSION.sub("", bare)
    out.append(unversioned)
    out.append(_DATE.sub("", unversioned))
    seen: set[str] = set()
    return [n for n in out if n and not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]


def provider_hint(name: str) -> str | None:
    """The provider a prefixed name names (`openai/gpt-4o` -> openai), if any."""
    if "/" in name:
        return name.split("/", 1)[0]
    return None
