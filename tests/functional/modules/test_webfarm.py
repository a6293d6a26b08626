"""webfarm.defaults: each capability's defaults, from its pure module, through Salt's loader."""

import pytest
from salt.exceptions import SaltInvocationError


def test_defaults_are_the_utils_and_a_copy(modules):
    import webfarm_accesslog
    import webfarm_mysqlsnap

    snap = modules.webfarm.defaults("mysqlsnap")
    assert snap == webfarm_mysqlsnap.DEFAULTS and snap["schedule"]["max_age"] == "24h"
    snap["schedule"]["max_age"] = "1h"
    assert modules.webfarm.defaults("mysqlsnap")["schedule"]["max_age"] == "24h"
    assert modules.webfarm.defaults("accesslog") == webfarm_accesslog.DEFAULTS


def test_an_unknown_capability_is_a_clean_error(modules):
    with pytest.raises(SaltInvocationError, match="no defaults for 'nope': one of accesslog"):
        modules.webfarm.defaults("nope")
