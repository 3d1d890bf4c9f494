"""The runnable example of docs/client.md, run twice against a sealed-state demo server."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .servers import Recorder

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def example() -> str:
    match = re.search(r"<!-- example: cart\.py -->\n```python\n(.*?)\n```", GUIDE.read_text(), re.S)
    assert match, "docs/client.md lost its example"
    return match.group(1)


def test_the_client_guide_example_runs_and_resumes_after_a_restart(
    demo_http: Callable[..., tuple[str, Recorder]], tmp_path: Path
) -> None:
    url, _ = demo_http(state="sealed")
    script = tmp_path / "cart.py"
    script.write_text(example())
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script), url],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    first, second = outputs
    assert first[1:] == [
        "cart: ['apple']",
        "after the rollback: ['apple', 'pear']",
        "the fork ordered: ['apple', 'pear', 'gift']",
        "our cart is still: ['apple', 'pear', 'tea']",
    ]
    assert first[0].endswith("advertised: True")
    assert second[0] == first[0]  # the same session, resumed from cart-session.json
    assert second[1] == "cart: ['apple', 'pear', 'tea', 'apple']"
