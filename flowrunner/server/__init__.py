"""``flowrunner serve``: the trigger API.

Executions are asked for over HTTP, recorded durably in the state store's queue before
they are accepted, and run in the background with bounded concurrency; their records
are read back over HTTP and their on-complete pushes sent by the outbox.

Modules: :mod:`.app` (routes and middlewares, the only one importing aiohttp's server),
:mod:`.body` (the request body), :mod:`.auth`, :mod:`.problems` (RFC 9457 errors),
:mod:`.storeio` (the store's writer thread, group commits), :mod:`.executor` (runs the
queue), :mod:`.flows` (loading and reloading the project), :mod:`.metrics`,
:mod:`.openapi`, :mod:`.logs` and :mod:`.main` (start, signals, stop).
"""
