"""The web console (issue 13): pools, jobs, one job whole, dead letters and handlers, in a browser.

``kubeworkers ui --redis-url URL`` serves it (docs/console.md). It shows and does what the CLI does,
through the same code: ``jobs list``/``describe`` (:mod:`kubeworkers.inspection`), ``stats``
(:mod:`kubeworkers.stats` through ``Client.stats``), ``dlq`` (:mod:`kubeworkers.dlq`), ``jobs retry``
(:mod:`kubeworkers.reruns`) and ``jobs cancel`` (:func:`kubeworkers.queue.cancel_sync`). Nothing here
writes a query of its own over the jobs: the console is pages around those functions.

Layers, top to bottom: :mod:`.command` (the ``ui`` subcommand's flags, without importing aiohttp),
:mod:`.server` (aiohttp routes, headers, the one place a request meets
Redis), :mod:`.reads` (the calls into the CLI's modules, blocking, run in threads), :mod:`.pages`
(pure HTML rendering: every value shown goes through :func:`html.escape`), :mod:`.forms` (pure
validation of every query and form field) and :mod:`.csrf` (the action tokens).
"""
