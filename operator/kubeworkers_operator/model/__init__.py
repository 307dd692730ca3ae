"""The operator's pure model: what a Job's status, a pool's Deployment, a TTL mean. No I/O.

Nothing here imports redis, aiohttp, kopf or kubernetes (``.importlinter`` checks it):
these modules take plain values and return plain values, so they are tested without
any service and every flow above them shares one rule per question.
"""
