import os
import stat

import pytest


@pytest.fixture
def loaders_pillar():
    return {"motd": {"width": 30}}


def test_scroll_default_is_a_fortune_in_the_frame(modules):
    out = modules.motd.scroll()
    lines = out.splitlines()
    assert lines[0] == " __," + "-" * 36 + ",__"  # the seed's frame, scaled to width 30
    assert lines[2].startswith("\\__/|       ") and lines[-1] == "   `" + "-" * 37 + "``"
    # Pillar width 30: every text row pads its text to 30 columns.
    assert all(len(line) in (43, 44, 45) for line in lines[2:-2])


def test_scroll_text_argument_wins(modules):
    out = modules.motd.scroll(text="pinned message", width=20)
    assert "pinned message" in out


def test_scroll_bad_width_is_a_clean_error(modules):
    from salt.exceptions import SaltInvocationError

    with pytest.raises(SaltInvocationError, match="width"):
        modules.motd.scroll(text="x", width="wide")


def test_update_writes_base_plus_scroll_0644(modules, tmp_path):
    base = tmp_path / "motd_base"
    base.write_text("Welcome to web-s1-f1-m1\n")
    pinned = tmp_path / "motd_pinned"
    pinned.write_text("Freeze until Monday\n")
    target = tmp_path / "motd"
    ret = modules.motd.update(target=str(target), base=str(base), pinned=str(pinned))
    text = target.read_text()
    assert text.startswith("Welcome to web-s1-f1-m1\n __,---")
    assert "Freeze until Monday" in text
    assert ret["pinned"] is True
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644


def test_current_tells_whether_motd_needs_rendering(modules, tmp_path):
    base, pinned, target = tmp_path / "base", tmp_path / "pinned", tmp_path / "motd"
    base.write_text("Welcome\n")
    paths = {"target": str(target), "base": str(base), "pinned": str(pinned)}
    assert modules.motd.current(**paths) is False  # no motd yet
    modules.motd.update(**paths)
    assert modules.motd.current(**paths) is True  # base + a fortune scroll
    pinned.write_text("Pinned\n")
    assert modules.motd.current(**paths) is False  # the pinned text is not shown yet
    modules.motd.update(**paths)
    assert modules.motd.current(**paths) is True
    base.write_text("New welcome\n")
    assert modules.motd.current(**paths) is False
    modules.motd.update(**paths)
    assert modules.motd.current(**paths) is True
    assert modules.motd.current(**paths, width=40) is False
