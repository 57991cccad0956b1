"""The generated nginx shield configuration says what our edge does."""

from __future__ import annotations

import re
from pathlib import Path

from mainevent.media.edge.nginx import NginxShield, nginx_shield_config


def test_config_has_lock_stale_updating_and_ll_hls_key() -> None:
    """Coalescing, stale-while-updating, LL-HLS key without CMCD/token, token rewrite."""
    text = nginx_shield_config(NginxShield(8081, "127.0.0.1", 8080, Path("/tmp/x")))
    assert "worker_processes 1;" in text
    assert "proxy_cache_lock on;" in text
    assert "proxy_cache_use_stale updating error timeout" in text
    assert "proxy_cache_background_update on;" in text
    assert 'proxy_cache_key "$uri|$arg__HLS_msn|$arg__HLS_part|$arg__HLS_skip";' in text
    assert "CMCD" not in text.split("proxy_cache_key", 1)[1].split("\n", 1)[0]
    assert "server 127.0.0.1:8080;" in text
    assert "listen 127.0.0.1:8081" in text
    rewrite = re.search(r'rewrite "(.+?)" \$1 break;', text)
    assert rewrite is not None
    pattern = re.compile(rewrite.group(1).replace("{{", "{").replace("}}", "}"))
    m = pattern.match("/t/st=1~exp=2~acl=/live/e/*~kid=k~hmac=" + "a" * 64 + "/live/e/v/1.m4s")
    assert m is not None
    assert m.group(1) == "/live/e/v/1.m4s"
