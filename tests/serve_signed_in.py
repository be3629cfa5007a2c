"""`python -m tests.serve_signed_in serve …`: `python -m tokens serve`, except that its Redis
connections sign in through a credential provider instead of a password in RATE_LIMIT_STORAGE, as
the app's own do with Azure's Redis (tokens/redisauth.py). The user name and password come from
TEST_REDIS_USERNAME and TEST_REDIS_PASSWORD, which only this launcher reads.
"""

from __future__ import annotations

import os
import sys

from redis.credentials import CredentialProvider, UsernamePasswordCredentialProvider

from tokens import redisauth
from tokens.__main__ import main


def provider_for(url: str, client_id: str | None = None) -> CredentialProvider:
    return UsernamePasswordCredentialProvider(os.environ["TEST_REDIS_USERNAME"], os.environ["TEST_REDIS_PASSWORD"])


if __name__ == "__main__":
    redisauth.credential_provider_for = provider_for
    sys.exit(main(sys.argv[1:]))
