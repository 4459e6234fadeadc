"""The web console served by `kennel serve` at /ui: server-rendered pages (Jinja2) with a little
JavaScript on top, every asset shipped in this package (no CDN: air-gapped sites), strings in
Babel message catalogs (English and Vietnamese).

``routes.router`` is mounted by ``kennel.server.app``; each page lives in a module of its own with
its own ``router``. What the console keeps while the server runs (sessions, catalogs, templates,
the overview's samples) is a ``state.ConsoleState`` built in the app's lifespan."""
