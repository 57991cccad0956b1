"""Token verification throughput on one core: how many `/t/<token>/live/...` checks per second.

Run: `.venv/bin/python bench/tokens.py` (goal: ≥ 100,000 verifications/s per core).
"""

from __future__ import annotations

import time

from mainevent.common.tokens import TokenGate, TokenSigner, TokenVerifier, split_token_path

KEYS = {"k1": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}


def main() -> None:
    """Verify the same and different tokens in a tight loop and print rates."""
    signer = TokenSigner(KEYS, kid="k1")
    verifier = TokenVerifier(KEYS)
    gate = TokenGate(verifier)
    now = time.time()
    tokens = [
        signer.sign(
            acl="/live/final/*",
            start=int(now) - 10,
            expires=int(now) + 3600,
            session_id=f"s{i:06d}",
        )
        for i in range(1000)
    ]
    paths = [f"/t/{t}/live/final/v720/{1_000_000 + i}.m4s" for i, t in enumerate(tokens)]
    for label, mode in (
        ("verify", 0),
        ("split_token_path + verify", 1),
        ("TokenGate.check (what an origin calls)", 2),
    ):
        best = 0.0
        for _ in range(3):
            n = 0
            t0 = time.perf_counter()
            deadline = t0 + 1.0
            while time.perf_counter() < deadline:
                for p in paths:
                    if mode == 2:
                        assert gate.check(p, now).allowed
                    elif mode == 1:
                        tok, rest = split_token_path(p)
                        assert tok is not None
                        assert verifier.verify(tok, rest, now).ok
                    else:
                        assert verifier.verify(tokens[n % 1000], "/live/final/v720/1.m4s", now).ok
                    n += 1
            rate = n / (time.perf_counter() - t0)
            best = max(best, rate)
        print(f"{label}: {best:,.0f} verifications/s on one core (best of 3 one-second runs)")


if __name__ == "__main__":
    main()
