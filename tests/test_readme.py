"""The README's Python examples run as written."""

import re
from pathlib import Path

from mypy import api

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)  # the README's own code
    assert namespace["logits"].shape == (8, 64, 256)  # type: ignore[attr-defined]  # a tensor made by the README


def test_readme_python_blocks_pass_mypy_strict_with_the_readmes_own_settings(tmp_path: Path) -> None:
    """A user's project, configured as the README says, type-checks the README's code cleanly."""
    text = README.read_text()
    (config,) = re.findall(r"```ini\n(\[mypy\].*?)```", text, re.S)
    (tmp_path / "mypy.ini").write_text(config)
    (tmp_path / "user_code.py").write_text("\n".join(re.findall(r"```python\n(.*?)```", text, re.S)))
    cache = README.parent / ".mypy_cache" / "readme"
    stdout, stderr, status = api.run(
        ["--config-file", str(tmp_path / "mypy.ini"), "--cache-dir", str(cache), str(tmp_path / "user_code.py")]
    )
    assert status == 0 and "Success" in stdout, stdout + stderr
