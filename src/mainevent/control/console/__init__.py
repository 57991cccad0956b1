"""Operations console: operator login (session cookie over the API keys, roles admin / operator /
read-only), the console page at ``/console/`` and the live view of an event it polls.

    settings.py   ConsoleSettings (``console`` in the control plane's settings)
    sessions.py   logins, session cookie, CSRF token, failed-login limit (no I/O)
    live.py       the live view: telemetry QoE and alerts, /metrics summaries
    runtime.py    what a control-plane process keeps for the console
    routes.py     /console/ page and assets, /console/api/...

Nothing is imported here: the control plane's settings import ``settings.py`` alone.
"""
