"""Write requirements-lock.txt from the active environment (``make lock``, after a green
``make test``). The lock is for one platform, named in its header; install.sh uses it only
there. Refuses to re-lock on another platform unless asked (N2N_LOCK_NEW_PLATFORM=1), so a
run on a Mac cannot silently replace CI's exact versions. ``--platform`` prints this
interpreter's platform as the header writes it (install.sh compares the two)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements-lock.txt"
INSTALL = Path(__file__).resolve().parent / "install.sh"


def current_platform() -> str:
    return f"{platform.system()}, Python {sys.version_info[0]}.{sys.version_info[1]}"


def locked_platform(text: str) -> str | None:
    m = re.search(r"^# platform: (.+)$", text, re.M)
    return m[1].strip() if m else None


def main() -> int:
    here = current_platform()
    before = locked_platform(LOCK.read_text()) if LOCK.is_file() else None
    if before and before != here and not os.environ.get("N2N_LOCK_NEW_PLATFORM"):
        print(
            f"error: {LOCK.name} is for {before}; this is {here}. Run `make lock` on {before} "
            "(CI's platform), or set N2N_LOCK_NEW_PLATFORM=1 to lock for this one instead."
        )
        return 1
    torch_spec = re.search(r"TORCH_SPEC:-([^}]+)}", INSTALL.read_text())[1]
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    pins = [x for x in freeze if not re.match(r"(?i)^(torch|n2n[_-]core)\b", x)]
    header = [
        "# exact versions `make test` passes with. Refresh: make lock (scripts/lock.py)",
        f"# platform: {here}",
        f"# torch: {torch_spec}, installed by scripts/install.sh first (not listed below)",
    ]
    LOCK.write_text("\n".join(header + pins) + "\n")
    print(f"[lock] {LOCK.name}: {len(pins)} packages for {here}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--platform"]:
        print(current_platform())
        sys.exit(0)
    sys.exit(main())
