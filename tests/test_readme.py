"""The README stays true to the code: every setting is documented with its flag and variable."""

from app.config import Settings
from harness.servers import ROOT


def test_every_setting_is_in_the_configuration_table():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        flag, env = "--" + name.replace("_", "-"), "SRNN_" + name.upper()
        assert f"| `{flag}` | `{env}` |" in readme, f"{flag} is missing from the README's table"


def test_quick_start_commands_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
