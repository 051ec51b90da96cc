"""Runs LocalStack with HTTP keep-alive, as SQS itself has.

LocalStack's hypercorn gateway (the one that binds to 127.0.0.1 only) answers every request
with `Connection: close` unless the client asks for keep-alive by name, a workaround for old
boto clients (localstack/localstack#6557). The Rust SDK does not name it, so every call
would open a new TCP connection: a cost real SQS never charges, which would skew every
throughput figure and load LocalStack with connection set-up. This drops that workaround
and then starts LocalStack as `python -m localstack.runtime.main` would.
"""

import localstack.aws.handlers as handlers


def _keep_connection(_chain, _context, _response):
    """Leaves the connection as HTTP/1.1 has it: open."""


handlers.set_close_connection_header = _keep_connection

from localstack.runtime.main import main  # noqa: E402  (after the patch, on purpose)

if __name__ == "__main__":
    main()
