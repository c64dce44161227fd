"""The `avatar` command: a thin shell over the recipes (and, later, the server)."""
