"""Repository secret scan: detect-secrets' plugins plus a rule for Alpaca key shapes.

`python -m tests.hardening.secret_scan` scans the repository's files (tracked, and new
files git does not ignore) and exits 1 naming each finding's file, line and kind -- never
the value. tests/hardening/test_secrets.py runs the same scan under `make test`.

The Alpaca rules live in the plugin file tests/hardening/alpaca_keys.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from detect_secrets import SecretsCollection
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.core.potential_secret import PotentialSecret
from detect_secrets.settings import transient_settings

from tests.hardening import alpaca_keys

REPO = Path(__file__).resolve().parents[2]
UNTRACKED_DIRS = {
    ".git",
    ".venv",
    ".prefect",
    "data",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "dask-worker-space",
    ".scratch",
    "tradingml.egg-info",
}
"""Folders .gitignore keeps out of the repository (and .env, the local secrets file):
skipped when there is no git to ask."""


# Made-up credentials that tests use on purpose, excused from detect-secrets' keyword
# heuristic (which flags `KEY, SECRET = "...", "..."` whatever the value) in files under
# tests/ only: the fakes' own keys, wrong keys for refusal tests, and leak canaries. None
# has a real credential's shape (the Alpaca rules are never excused; test_secrets checks
# these values against them). Prefer `# pragma: allowlist secret` on a new fake's line
# to adding a value here.
TEST_FAKES: frozenset[str] = frozenset(
    {
        "fake-key-id",  # tests/fakes/alpaca.py's FakeAlpacaRest accepts it
        "test-key-id",  # the stream fake's default key
        "wrong-key-id-for-tests",
        "wrong-secret-9f8e7d",
        "fake-client-secret-Zq81xK",  # tests/fakes/reddit.py
        "sk-very-secret-value-123",  # tests/unit/test_settings.py's leak canary
        "set (hidden)",  # what describe() prints for a secret
    }
)
KEYWORD_TYPE = "Secret Keyword"


@dataclass(frozen=True)
class Finding:
    """Where a secret-shaped value is: never the value itself."""

    path: str
    line: int
    kind: str
    hashed: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def repository_files(root: Path = REPO) -> list[str]:
    """The files a commit would hold: tracked ones and new ones git does not ignore.

    Outside a git work tree (an unpacked archive, a test's folder): every file under root
    but those in the folders of UNTRACKED_DIRS.
    """
    if not (root / ".git").exists():
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file()
            and p.name != ".env"
            and not UNTRACKED_DIRS & set(p.relative_to(root).parts[:-1])
        )
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in out.split("\0") if name and (root / name).is_file()})


def _plugins() -> list[dict[str, str]]:
    builtin = [{"name": cls.__name__} for cls in get_mapping_from_secret_type_to_class().values()]
    here = f"file://{Path(alpaca_keys.__file__).resolve()}"
    return [
        *builtin,
        {"name": alpaca_keys.AlpacaKeyIdDetector.__name__, "path": here},
        {"name": alpaca_keys.AlpacaSecretKeyDetector.__name__, "path": here},
    ]


def scan(
    root: Path = REPO,
    files: Iterable[str] | None = None,
    test_fakes: frozenset[str] = TEST_FAKES,
) -> list[Finding]:
    """Every secret-shaped value in `files` (relative to root; default: the repository's)."""
    names = list(repository_files(root) if files is None else files)
    excused = {PotentialSecret.hash_secret(value) for value in test_fakes}
    plugins = _plugins()
    with transient_settings({"plugins_used": plugins}):
        # The mapping is cached from before the custom plugins were configured.
        get_mapping_from_secret_type_to_class.cache_clear()
        try:
            found = SecretsCollection(root=str(root))
            for name in names:
                found.scan_file(name)
        finally:
            get_mapping_from_secret_type_to_class.cache_clear()
    findings = []
    for name, secret in found:
        path = Path(name).as_posix()
        if (
            secret.type == KEYWORD_TYPE
            and path.startswith("tests/")
            and secret.secret_hash in excused
        ):
            continue
        findings.append(
            Finding(path, int(secret.line_number or 0), secret.type, secret.secret_hash)
        )
    findings.extend(alpaca_findings(root, names))
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.kind))


ALPACA_RULES = (alpaca_keys.AlpacaKeyIdDetector, alpaca_keys.AlpacaSecretKeyDetector)


def alpaca_findings(root: Path, names: Iterable[str]) -> list[Finding]:
    """The Alpaca rules once more, line by line, with no allowlist: no pragma or filter
    excuses a value of a real Alpaca key's shape."""
    out = []
    for name in names:
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for rule in ALPACA_RULES:
                for pattern in rule.denylist:
                    for match in pattern.finditer(line):
                        out.append(
                            Finding(
                                Path(name).as_posix(),
                                number,
                                rule.secret_type,
                                PotentialSecret.hash_secret(match.group(0)),
                            )
                        )
    return out


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]).resolve() if argv else REPO
    findings = scan(root)
    for finding in findings:
        print(finding)
    print(f"secret scan: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
