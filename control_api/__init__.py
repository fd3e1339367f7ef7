"""The control plane: REST API, persistence, auth, and the `flowyte` command line.

Imports go one way: control_api -> runtime -> {pipeline, telephony}.
"""
