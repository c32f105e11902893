"""How steps retry: transient faults of object storage (gs:// in production) and language models.

Spread out with jitter, so that many steps do not retry in lockstep. Per-recording failures are rows,
not exceptions, so they never trigger a retry.
"""

import dagster as dg

NETWORK_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
