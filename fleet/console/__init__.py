"""The operator console: `server.py` (the HTTP server `fleet train` runs, its page in
`static/`), `client.py` (the same API from a terminal: `fleet status`, `fleet intervene`)."""
